"""Operating on jobs: cancel, retry, purge."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from helpers import processor, write_job

from miniq.core.errors import BadInput
from miniq.core.job import State
from miniq.core.schedule import Schedule
from miniq.store.queue import Queue


def test_cancel_queued_and_delayed_jobs_never_run(root: Path) -> None:
    q = Queue(root)
    queued = q.enqueue("echo", ["x"])
    delayed = q.enqueue("echo", ["y"], schedule=Schedule(not_before=time.time() + 60))
    assert q.cancel(queued.id) is State.QUEUED
    assert q.cancel(delayed.id) is State.DELAYED
    for job in (queued, delayed):
        result = q.read(job.id).result
        assert result is not None and result.outcome.value == "cancelled"
    p, _ = processor(root)
    assert p.run().succeeded == []
    with pytest.raises(BadInput, match="has already finished"):
        q.cancel(queued.id)


def test_cancel_a_running_job(root: Path, tmp_path: Path) -> None:
    started = tmp_path / "started"
    write_job(root, "sleepy", f"#!/bin/sh\ntouch {started}\nexec sleep 300\n")
    q = Queue(root)
    job = q.enqueue("sleepy", [])
    p, _ = processor(root)
    t = threading.Thread(target=p.run)
    t.start()
    # Wait for the job's first instruction, not for its claim: a cancel between the claim and
    # the start is the case below (CI once cancelled in that window: no signal to record).
    deadline = time.monotonic() + 30
    while not started.exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)
    assert q.cancel(job.id) is State.RUNNING
    t.join(timeout=30)
    assert not t.is_alive()
    result = q.read(job.id).result
    assert result is not None and result.outcome.value == "cancelled" and result.signal == "SIGKILL"
    assert result.wait_status == 130
    assert os.listdir(root / "cancel") == []


def test_cancel_between_the_claim_and_the_start(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = tmp_path / "started"
    write_job(root, "sleepy", f"#!/bin/sh\ntouch {started}\nexec sleep 300\n")
    q = Queue(root)
    job = q.enqueue("sleepy", [])
    p, _ = processor(root)
    execute = p._execute
    seen: list[State] = []

    def cancel_then_execute(*args: object) -> object:
        seen.append(q.cancel(job.id))  # the job is claimed, its scope not yet made
        return execute(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(p, "_execute", cancel_then_execute)
    p.run()
    assert seen == [State.RUNNING]
    assert not started.exists()
    result = q.read(job.id).result
    assert result is not None and result.outcome.value == "cancelled" and result.signal is None
    assert result.reason == "cancelled before it started"
    assert os.listdir(root / "cancel") == []


def test_retry_puts_a_failed_job_back(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 4\n")
    q = Queue(root)
    job = q.enqueue("fail", ["a", "b"])
    processor(root)[0].run()
    result = q.read(job.id).result
    assert result is not None and result.wait_status == 4
    q.retry(job.id)
    assert q.locate(job.id)[0] is State.QUEUED
    processor(root)[0].run()
    record = q.read(job.id)
    assert record.job is not None and record.job.argv == ("a", "b") and len(record.job.attempts) == 2
    ok = q.enqueue("echo", [])
    processor(root)[0].run()
    with pytest.raises(BadInput, match=f"job {ok.id} is done: only failed or cancelled jobs can be retried"):
        q.retry(ok.id)


def test_retry_of_a_record_left_linked_by_a_crash(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 1\n")
    q = Queue(root)
    job = q.enqueue("fail", [])
    processor(root)[0].run()
    record = root / "failed" / f"{job.id}.json"
    os.link(record, root / "tmp" / f".{job.id}.json.1.abcd.tmp")  # a staging name a crash left behind
    q.retry(job.id)
    processor(root)[0].run()
    assert len(q.read(job.id).job.attempts) == 2  # type: ignore[union-attr]


def test_purge(root: Path) -> None:
    q = Queue(root)
    jobs = [q.enqueue("echo", [str(i)]) for i in range(3)]
    processor(root)[0].run()
    assert q.purge(3600) == []
    assert sorted(q.purge(0, dry_run=True, now=time.time() + 10)) == sorted(j.id for j in jobs)
    assert len(os.listdir(root / "done")) == 3
    assert sorted(q.purge(0)) == sorted(j.id for j in jobs)
    assert os.listdir(root / "done") == []
