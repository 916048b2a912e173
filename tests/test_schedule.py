"""When jobs run: priorities, delays and the wake timer, --at."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from helpers import processor

from miniq.core.schedule import Schedule, backoff
from miniq.core.timeparse import parse_at
from miniq.store.layout import WAKE
from miniq.store.queue import Queue


def test_priority_then_submission_order(root: Path) -> None:
    q = Queue(root)
    low = q.enqueue("echo", ["low"], schedule=Schedule(priority=-5))
    a = q.enqueue("echo", ["a"])
    high = q.enqueue("echo", ["high"], schedule=Schedule(priority=10))
    b = q.enqueue("echo", ["b"])
    names = [f"1005-{low.id}.json", f"1000-{a.id}.json", f"0990-{high.id}.json", f"1000-{b.id}.json"]
    assert sorted(os.listdir(root / "queue")) == sorted(names)
    p, _ = processor(root)
    assert p.run().succeeded == [high.id, a.id, b.id, low.id]


def test_delayed_job_stays_out_of_the_queue_and_arms_the_timer(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", [], schedule=Schedule(not_before=time.time() + 3600))
    assert job.schedule.not_before is not None
    assert os.listdir(root / "delayed") == [f"{int(job.schedule.not_before * 1000):013d}-{job.id}.json"]
    assert os.listdir(root / "queue") == [WAKE]  # starts the processor to arm the timer
    p, wakes = processor(root)
    summary = p.run()
    assert summary.succeeded == [] and os.listdir(root / "queue") == []
    assert wakes == [pytest.approx(job.schedule.not_before, abs=0.002)]


def test_a_due_time_that_passed_meanwhile_runs_at_the_next_start(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["late"], schedule=Schedule(not_before=time.time() + 0.2))
    time.sleep(0.3)  # as if the machine was off when the timer would have fired
    p, wakes = processor(root)
    assert p.run().succeeded == [job.id] and wakes == []


def test_a_delayed_job_due_while_the_processor_lingers_runs_at_once(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["soon"], schedule=Schedule(not_before=time.time() + 0.5))
    p, wakes = processor(root, linger=2.0)
    assert p.run().succeeded == [job.id] and wakes == []
    result = q.read(job.id).result
    assert result is not None and result.started is not None and job.schedule.not_before is not None
    from miniq.core.timeparse import timestamp

    assert 0 <= timestamp(result.started) - job.schedule.not_before < 0.5  # not after the linger


def test_delayed_names_of_0_1_0_are_still_read(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", [], schedule=Schedule(not_before=time.time() - 1))
    (root / "queue" / f"1000-{job.id}.json").rename(root / "delayed" / f"{job.id}.json")
    p, _ = processor(root)
    assert p.run().succeeded == [job.id]


def test_backoff_bounds() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff(40) == 3600 and backoff(10**6) == 3600


def test_parse_at() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    assert parse_at("13:30", now) == datetime(2026, 11, 28, 13, 30, tzinfo=timezone.utc).timestamp()
    assert parse_at("11:00", now) == datetime(2026, 11, 29, 11, 0, tzinfo=timezone.utc).timestamp()
    assert parse_at("2026-12-24T18:00+00:00") == datetime(2026, 12, 24, 18, tzinfo=timezone.utc).timestamp()
