"""Several jobs at once: one worker process per slot."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import processor, write_job

from miniq.queue import Queue


def test_parallel_runs_jobs_at_once(root: Path) -> None:
    write_job(root, "nap", "#!/bin/sh\nsleep 0.5\n")
    q = Queue(root)
    ids = [q.enqueue("nap", []).id for _ in range(8)]
    p, _ = processor(root, parallel=4)
    t = time.monotonic()
    summary = p.run()
    elapsed = time.monotonic() - t
    assert sorted(summary.succeeded) == sorted(ids)
    results = [q.read(i).result for i in ids]
    starts = sorted(r.started for r in results if r and r.started)
    ends = sorted(r.ended for r in results if r and r.ended)
    # Four ran at once: the 4th started before the 1st ended.
    assert starts[3] < ends[0], (starts, ends)
    assert elapsed < 8 * 0.5
    assert len({r.pid for r in results if r}) == 8


def test_a_worker_process_that_dies_loses_no_job(root: Path) -> None:
    write_job(root, "killer", "#!/bin/sh\nkill -9 $PPID\nsleep 1\n")
    q = Queue(root)
    victim = q.enqueue("killer", [])
    others = [q.enqueue("echo", [str(i)]).id for i in range(6)]
    (root / "miniq.conf").write_text("[processor]\nmax-interruptions = 1\n")
    p, _ = processor(root, parallel=2)
    summary = p.run()
    assert sorted(summary.succeeded) == sorted(others)
    assert summary.recovered == [victim.id]
    result = q.read(victim.id).result
    assert result is not None and result.outcome.value == "interrupted"
    assert result.reason is not None and "interrupted 1 times" in result.reason
