"""`miniq wait`: exit statuses, a distinct status when it gives up, no spurious
errors while jobs change state."""

from __future__ import annotations

import threading
from pathlib import Path

from click.testing import CliRunner
from helpers import processor, write_job

from miniq.cli import main
from miniq.queue import Queue
from miniq.result import Outcome, Result


def test_wait_exit_statuses(root: Path) -> None:
    write_job(root, "three", "#!/bin/sh\nexit 3\n")
    q = Queue(root)
    ok, bad = q.enqueue("echo", []), q.enqueue("three", [])
    processor(root)[0].run()
    run = CliRunner().invoke
    assert run(main, ["--root", str(root), "wait", ok.id]).exit_code == 0
    assert run(main, ["--root", str(root), "wait", ok.id, bad.id]).exit_code == 3
    for outcome, status in (("timeout", 124), ("oom", 137), ("cancelled", 130), ("not-started", 125), ("rejected", 125)):
        assert Result(Outcome(outcome)).wait_status == status
    assert Result(Outcome.SIGNALED, signal="SIGTERM").wait_status == 143


def test_wait_gives_up_with_its_own_status(root: Path) -> None:
    job = Queue(root).enqueue("echo", [])
    result = CliRunner().invoke(main, ["--root", str(root), "wait", "--timeout", "0.2s", job.id])
    assert (result.exit_code, result.stderr) == (75, "Error: jobs still not finished after 0.2s\n")


def test_wait_for_many_jobs_while_they_move(root: Path) -> None:
    """Waiters on jobs moving through every state never see a spurious error."""
    q = Queue(root)
    ids = [q.enqueue("echo", [str(i)]).id for i in range(300)]
    results: list[int] = []

    def waiter(chunk: list[str]) -> None:
        results.append(CliRunner().invoke(main, ["--root", str(root), "wait", *chunk]).exit_code)

    threads = [threading.Thread(target=waiter, args=(ids[i::6],)) for i in range(6)]
    for t in threads:
        t.start()
    processor(root, parallel=2)[0].run()
    for t in threads:
        t.join(timeout=60)
    assert results == [0] * 6
