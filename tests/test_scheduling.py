"""Delays, priorities, dependencies, retries, cancel, retry, purge, parallelism.

Real files and real processes (PlainRunner); the wake timer is recorded
instead of armed.  The same behaviour against real systemd is in
tests/integration/operate_checks.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_job
from test_processor import ListSink

from miniq.cli import main
from miniq.errors import BadInput
from miniq.job import Schedule, State, backoff, parse_at
from miniq.listing import ROW_KEYS, exit_status, rows
from miniq.processor import Processor
from miniq.queue import Queue, claimer_id
from miniq.scope import PlainRunner
from miniq.settings import Manager


def processor(root: Path, **kw: object) -> tuple[Processor, list[float]]:
    wakes: list[float] = []
    return Processor(Queue(root), Manager.USER, runner=PlainRunner(), sink=ListSink(), waker=wakes.append, **kw), wakes  # type: ignore[arg-type]


def test_priority_then_submission_order(root: Path) -> None:
    q = Queue(root)
    low = q.enqueue("echo", ["low"], schedule=Schedule(priority=-5))
    a = q.enqueue("echo", ["a"])
    high = q.enqueue("echo", ["high"], schedule=Schedule(priority=10))
    b = q.enqueue("echo", ["b"])
    assert sorted(os.listdir(root / "queue")) == sorted([f"{low.id}.p-5.json", f"{a.id}.json", f"{high.id}.p10.json", f"{b.id}.json"])
    p, _ = processor(root)
    assert p.run().succeeded == [high.id, a.id, b.id, low.id]


def test_delayed_job_stays_out_of_the_queue_and_arms_the_timer(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", [], schedule=Schedule(not_before=time.time() + 3600))
    assert os.listdir(root / "delayed") == [f"{job.id}.json"]
    assert os.listdir(root / "queue") == [Queue.WAKE]  # starts the processor to arm the timer
    p, wakes = processor(root)
    summary = p.run()
    assert summary.succeeded == [] and os.listdir(root / "queue") == []
    assert wakes == [pytest.approx(job.schedule.not_before)]


def test_a_due_time_that_passed_meanwhile_runs_at_the_next_start(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["late"], schedule=Schedule(not_before=time.time() + 0.2))
    time.sleep(0.3)  # as if the machine was off when the timer would have fired
    p, wakes = processor(root)
    assert p.run().succeeded == [job.id] and wakes == []


def test_dependencies(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 1\n")
    q = Queue(root)
    first = q.enqueue("echo", ["1"])
    bad = q.enqueue("fail", [])
    after_ok = q.enqueue("echo", ["2"], schedule=Schedule(after=(first.id,)))
    after_bad = q.enqueue("echo", ["3"], schedule=Schedule(after=(bad.id, first.id)))
    p, _ = processor(root)
    summary = p.run()
    assert summary.succeeded == [first.id, after_ok.id]
    record = q.record(after_bad.id)
    assert record["state"] == "failed"
    assert record["result"]["outcome"] == "not-started"
    assert record["result"]["reason"] == f"job {bad.id} it runs after did not succeed"


def test_after_an_unknown_job_is_bad_input(root: Path) -> None:
    with pytest.raises(BadInput, match="no job with id '20990101-000000-000000-00000000' to run after"):
        Queue(root).enqueue("echo", [], schedule=Schedule(after=("20990101-000000-000000-00000000",)))
    assert not (root / "queue").exists()


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
    assert q.find(job.id)[0] is State.DELAYED
    assert wakes[0] - time.time() == pytest.approx(backoff(1), abs=0.5)
    for _ in range(2):
        time.sleep(max(wakes[-1] - time.time(), 0) + 0.05)
        p, wakes = processor(root)
        p.run()
    record = q.record(job.id)
    assert record["state"] == "done"
    assert [(a["outcome"], a["exit_code"]) for a in record["attempts"]] == [("exited", 1), ("exited", 1), ("exited", 0)]


def test_backoff_bounds() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(40) == 3600


def test_cancel_queued_and_delayed_jobs_never_run(root: Path) -> None:
    q = Queue(root)
    queued = q.enqueue("echo", ["x"])
    delayed = q.enqueue("echo", ["y"], schedule=Schedule(not_before=time.time() + 60))
    assert q.cancel(queued.id, claimer_id()) is State.QUEUED
    assert q.cancel(delayed.id, claimer_id()) is State.DELAYED
    for job in (queued, delayed):
        assert q.record(job.id)["result"]["outcome"] == "cancelled"
    p, _ = processor(root)
    assert p.run().succeeded == []
    with pytest.raises(BadInput, match="has already finished"):
        q.cancel(queued.id, claimer_id())


def test_cancel_a_running_job(root: Path) -> None:
    write_job(root, "sleepy", "#!/bin/sh\nexec sleep 300\n")
    q = Queue(root)
    job = q.enqueue("sleepy", [])
    p, _ = processor(root)
    t = threading.Thread(target=p.run)
    t.start()
    while q.find(job.id)[0] is not State.RUNNING:
        time.sleep(0.02)
    assert q.cancel(job.id, claimer_id()) is State.RUNNING
    t.join(timeout=30)
    assert not t.is_alive()
    record = q.record(job.id)
    assert record["result"]["outcome"] == "cancelled" and record["result"]["signal"] == "SIGKILL"
    assert exit_status(record) == 130
    assert os.listdir(root / "cancel") == []


def test_retry_puts_a_failed_job_back(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 4\n")
    q = Queue(root)
    job = q.enqueue("fail", ["a", "b"])
    processor(root)[0].run()
    assert exit_status(q.record(job.id)) == 4
    q.retry(job.id)
    assert q.find(job.id)[0] is State.QUEUED
    processor(root)[0].run()
    record = q.record(job.id)
    assert record["argv"] == ["a", "b"] and len(record["attempts"]) == 2
    ok = q.enqueue("echo", [])
    processor(root)[0].run()
    with pytest.raises(BadInput, match=f"job {ok.id} is done: only failed or cancelled jobs can be retried"):
        q.retry(ok.id)


def test_purge(root: Path) -> None:
    q = Queue(root)
    jobs = [q.enqueue("echo", [str(i)]) for i in range(3)]
    processor(root)[0].run()
    assert q.purge(3600) == []
    assert sorted(q.purge(0, dry_run=True, now=time.time() + 10)) == sorted(j.id for j in jobs)
    assert len(os.listdir(root / "done")) == 3
    assert sorted(q.purge(0, now=time.time() + 10)) == sorted(j.id for j in jobs)
    assert os.listdir(root / "done") == []


def test_parallel_runs_jobs_at_once(root: Path) -> None:
    write_job(root, "nap", "#!/bin/sh\nsleep 0.5\n")
    q = Queue(root)
    ids = [q.enqueue("nap", []).id for _ in range(8)]
    p, _ = processor(root, parallel=4)
    t = time.monotonic()
    summary = p.run()
    elapsed = time.monotonic() - t
    assert sorted(summary.succeeded) == sorted(ids)
    starts = sorted(q.record(i)["result"]["started"] for i in ids)
    ends = sorted(q.record(i)["result"]["ended"] for i in ids)
    # Four ran at once: the 4th started before the 1st ended.
    assert starts[3] < ends[0], (starts, ends)
    assert elapsed < 8 * 0.5


def test_list_rows_have_the_documented_shape(root: Path) -> None:
    q = Queue(root)
    q.enqueue("echo", ["x"])
    q.enqueue("echo", ["y"], schedule=Schedule(not_before=time.time() + 60, priority=2))
    found = rows(q)
    assert [r["state"] for r in found] == ["queued", "delayed"]
    found = rows(q, [State.QUEUED, State.DELAYED])
    assert all(tuple(r) == ROW_KEYS for r in found)
    result = CliRunner().invoke(main, ["--root", str(root), "list", "--json"])
    assert json.loads(result.stdout) == found
    table = CliRunner().invoke(main, ["--root", str(root), "status"]).stdout.splitlines()
    assert table[0].split() == ["ID", "STATE", "NAME", "WHEN", "RESULT", "ARGS"] and len(table) == 3
    # A rejected file that was not a job at all has no name and no submission time.
    (root / "queue" / "junk.json").write_text("not a job")
    processor(root)[0].run()
    junk = [r for r in rows(q) if r["outcome"] == "rejected"]
    assert [(r["name"], r["submitted"], r["argv"], r["state"]) for r in junk] == [(None, None, [], "failed")]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--in", "soon"], "Error: invalid duration 'soon': expected e.g. 90s, 10m, 1h30m or 2d"),
        (["--at", "tomorrow"], "Error: invalid time 'tomorrow' for --at: expected e.g. 2026-12-24T18:00, '2026-12-24 18:00' or 18:00"),
        (["--in", "1m", "--at", "18:00"], "Error: --in and --at both given: expected at most one of them"),
        (["--after", "x"], "Error: invalid job id 'x' for --after: expected an id as printed by miniq enqueue"),
    ],
)
def test_bad_schedules_write_nothing(root: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["--root", str(root), "enqueue", *args, "echo"])
    assert (result.exit_code, result.stderr) == (2, message + "\n")
    assert not (root / "queue").exists() and not (root / "delayed").exists()


def test_parse_at() -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert parse_at("13:30", now) == datetime(2026, 11, 28, 13, 30, tzinfo=timezone.utc).timestamp()
    assert parse_at("11:00", now) == datetime(2026, 11, 29, 11, 0, tzinfo=timezone.utc).timestamp()
    assert parse_at("2026-12-24T18:00+00:00") == datetime(2026, 12, 24, 18, tzinfo=timezone.utc).timestamp()


def test_wait_exit_statuses(root: Path) -> None:
    write_job(root, "three", "#!/bin/sh\nexit 3\n")
    q = Queue(root)
    ok, bad = q.enqueue("echo", []), q.enqueue("three", [])
    processor(root)[0].run()
    run = CliRunner().invoke
    assert run(main, ["--root", str(root), "wait", ok.id]).exit_code == 0
    assert run(main, ["--root", str(root), "wait", ok.id, bad.id]).exit_code == 3
    for outcome, status in (("timeout", 124), ("oom", 137), ("cancelled", 130), ("not-started", 125), ("rejected", 125)):
        assert exit_status({"result": {"outcome": outcome}}) == status
    assert exit_status({"result": {"outcome": "signaled", "signal": "SIGTERM"}}) == 143
