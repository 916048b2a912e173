"""--after: jobs that run only once others succeeded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import processor, write_job

from miniq.core.errors import BadInput
from miniq.core.schedule import Schedule
from miniq.store.queue import Queue


def test_dependencies(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 1\n")
    q = Queue(root)
    first = q.enqueue("echo", ["1"])
    bad = q.enqueue("fail", [])
    after_ok = q.enqueue("echo", ["2"], schedule=Schedule(after=(first.id,)))
    after_bad = q.enqueue("echo", ["3"], schedule=Schedule(after=(bad.id, first.id)))
    assert sorted(os.listdir(root / "delayed")) == sorted([f"after-{after_ok.id}.json", f"after-{after_bad.id}.json"])
    p, _ = processor(root)
    summary = p.run()
    assert summary.succeeded == [first.id, after_ok.id]
    record = q.read(after_bad.id)
    assert record.state.label == "failed"
    assert record.result is not None and record.result.outcome.value == "not-started"
    assert record.result.reason == f"job {bad.id} it runs after did not succeed"


def test_a_vanished_dependency_is_named(root: Path) -> None:
    q = Queue(root)
    first = q.enqueue("echo", ["1"])
    waiting = q.enqueue("echo", ["2"], schedule=Schedule(after=(first.id,)))
    (root / "queue" / f"1000-{first.id}.json").unlink()
    processor(root)[0].run()
    result = q.read(waiting.id).result
    assert result is not None and result.reason == f"job {first.id} it runs after no longer exists"


def test_a_job_due_again_still_waits_for_what_it_runs_after(root: Path) -> None:
    """An interrupted job goes back to delayed/ with a time (its backoff); when
    that time comes, its dependencies are checked again: it never runs first
    (the nemesis found one that did)."""
    q = Queue(root)
    first = q.enqueue("echo", ["1"], schedule=Schedule(not_before=time.time() + 3600))
    waiting = q.enqueue("echo", ["2"], schedule=Schedule(after=(first.id,)))
    os.rename(root / "delayed" / f"after-{waiting.id}.json", q.layout.delayed_entry(waiting.id, time.time() - 1))
    summary = processor(root)[0].run()
    assert waiting.id not in summary.succeeded
    assert f"after-{waiting.id}.json" in os.listdir(root / "delayed")
    assert not [n for n in os.listdir(root / "queue") if waiting.id in n]
    assert q.read(waiting.id).state.label == "delayed"


def test_after_an_unknown_job_is_bad_input(root: Path) -> None:
    with pytest.raises(BadInput, match="no job with id '20990101-000000-000000-00000000' to run after"):
        Queue(root).enqueue("echo", [], schedule=Schedule(after=("20990101-000000-000000-00000000",)))
    assert not (root / "queue").exists()
