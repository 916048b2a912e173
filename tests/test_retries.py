"""--retries: failed runs are tried again after a backoff, every attempt kept."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import processor, write_job

from miniq.core.job import State
from miniq.core.schedule import Schedule, backoff
from miniq.store.queue import Queue


def test_retries_with_backoff_record_every_attempt(root: Path) -> None:
    # Fails twice, then succeeds: the count lives next to the job.
    write_job(
        root, "flaky", '#!/bin/sh\nn=$(cat "$MINIQ_ROOT/n" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$MINIQ_ROOT/n"; [ $n -ge 3 ]\n'
    )
    q = Queue(root)
    job = q.enqueue("flaky", [], schedule=Schedule(retries=3))
    p, wakes = processor(root)
    summary = p.run()
    assert summary.retrying == [job.id] and len(wakes) == 1
    assert q.locate(job.id)[0] is State.DELAYED
    assert wakes[0] - time.time() == pytest.approx(backoff(1), abs=0.5)
    for _ in range(2):
        time.sleep(max(wakes[-1] - time.time(), 0) + 0.05)
        p, wakes = processor(root)
        p.run()
    record = q.read(job.id)
    assert record.state is State.DONE and record.job is not None
    assert [(a.outcome.value, a.exit_code) for a in record.job.attempts] == [("exited", 1), ("exited", 1), ("exited", 0)]
    assert [a["attempt"] for a in record.data["attempts"] if "attempt" in a] == []
    assert len({a.run for a in record.job.attempts}) == 3  # each run named apart


def test_retries_run_within_one_lingering_processor(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 2\n")
    q = Queue(root)
    job = q.enqueue("fail", [], schedule=Schedule(retries=1))
    p, _ = processor(root, linger=3.0)
    summary = p.run()
    assert summary.retrying == [job.id] and summary.failed == [job.id]
    assert [a.exit_code for a in q.read(job.id).job.attempts] == [2, 2]  # type: ignore[union-attr]
