"""Sharing the processor: submitters take turns, each job has its own output budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ListSink, write_job

from miniq.core.manager import Manager
from miniq.run.output import Budget
from miniq.run.processor import Processor
from miniq.run.runner import PlainRunner
from miniq.store.layout import Layout, queue_name
from miniq.store.pending import Pending, _Turns
from miniq.store.queue import Queue


def test_turns_interleave_submitters_within_a_priority() -> None:
    turns = _Turns()
    for i in range(1000):
        turns.push(1001, queue_name(0, f"a{i:04d}"), f"alice-{i}")
    turns.push(1002, queue_name(0, "b0000"), "bob-0")
    turns.push(1002, queue_name(0, "b0001"), "bob-1")
    taken = [turns.pop() for _ in range(5)]
    assert taken == ["alice-0", "bob-0", "alice-1", "bob-1", "alice-2"]


def test_a_higher_priority_goes_first_whoever_sent_it() -> None:
    turns = _Turns()
    turns.push(1001, queue_name(0, "a1"), "alice-low")
    turns.push(1002, queue_name(5, "b1"), "bob-high")
    turns.push(1001, queue_name(5, "a2"), "alice-high")
    assert [turns.pop() for _ in range(3)] == ["alice-high", "bob-high", "alice-low"]


def test_one_submitter_keeps_submission_order() -> None:
    turns = _Turns()
    for i in (3, 1, 2):
        turns.push(1000, queue_name(0, f"id{i}"), f"job{i}")
    assert [turns.pop() for _ in range(3)] == ["job1", "job2", "job3"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to other users needs root (CI runs as root)")
def test_the_view_takes_owners_from_the_files(root: Path) -> None:
    queue = Queue(root)
    alices = [queue.enqueue("echo", [str(i)], owner=(1001, 1001)).id for i in range(50)]
    bobs = queue.enqueue("echo", ["b"], owner=(1002, 1002)).id
    pending = Pending(Layout(root), watch=False)
    try:
        first = [pending.next() for _ in range(3)]
    finally:
        pending.close()
    assert [p.name for p in first if p] == [queue_name(0, alices[0]), queue_name(0, bobs), queue_name(0, alices[1])]


def _system_processor(root: Path, sink: ListSink, manager: Manager) -> Processor:
    return Processor(Queue(root), manager, runner=PlainRunner(), sink=sink, waker=lambda when: None, linger=0.0)


@pytest.mark.parametrize("manager", [Manager.SYSTEM, Manager.USER])
def test_the_output_budget_is_each_jobs_own(root: Path, manager: Manager) -> None:
    write_job(root, "chatty", '#!/bin/sh\nseq 1 "$1"\n')
    (root / "miniq.conf").write_text("[processor]\noutput-rate-limit = 1000/1h\n")
    flood = Queue(root).enqueue("chatty", ["5000"])
    small = Queue(root).enqueue("chatty", ["500"])
    sink = ListSink()
    _system_processor(root, sink, manager).run()
    assert len(sink.output(flood.id)) == 1000
    if manager is Manager.SYSTEM:
        # journald does not limit the system service (LogRateLimitIntervalSec=0): each job its own budget.
        assert sink.output(small.id) == [str(i).encode() for i in range(1, 501)]
    else:
        # A user manager's services share journald's limit: so do the jobs, and the loss is counted.
        assert sink.output(small.id) == []
        assert [e["MINIQ_DROPPED"] for e in sink.events("dropped") if e["MINIQ_JOB_ID"] == small.id] == ["500"]


def test_a_shared_budget_is_not_spent_by_lines_a_job_may_not_pass() -> None:
    shared = Budget((10, 3600.0))
    own = Budget((2, 3600.0), shared)
    assert [own.take() for _ in range(4)] == [True, True, False, False]
    other = Budget((100, 3600.0), shared)
    assert sum(other.take() for _ in range(20)) == 8
