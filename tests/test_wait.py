"""`miniq wait`: exit statuses, a distinct status when it gives up, no spurious
errors while jobs change state."""

from __future__ import annotations

import threading
from pathlib import Path

from click.testing import CliRunner
from helpers import processor, write_job

from miniq.cli.main import main
from miniq.core.result import Outcome, Result
from miniq.store.queue import Queue


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


def test_a_waiter_unwatches_before_it_reads_and_closes(root: Path, tmp_path: Path) -> None:
    """inotify: after ``unwatch`` a directory's changes no longer arrive (the
    close that follows is then cheap: inotify.py); and ``wait`` leaves no
    inotify descriptor open, whether its jobs were done or unknown."""
    import os

    from miniq.core.errors import UnknownJob
    from miniq.core.inotify import open_watch
    from miniq.store.waiting import wait

    (tmp_path / "d").mkdir()
    watch = open_watch(tmp_path / "d")
    assert watch is not None
    (tmp_path / "d" / "one").touch()
    assert watch.events() == ([(tmp_path / "d", "one")], False)
    watch.unwatch()
    (tmp_path / "d" / "two").touch()
    assert watch.events() == ([], False) and watch.watches == {}
    watch.close()

    def inotify_fds() -> int:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
            except FileNotFoundError:
                pass  # the descriptor listdir itself used
        return links.count("anon_inode:inotify")

    before = inotify_fds()
    q = Queue(root)
    job = q.enqueue("echo", [])
    processor(root)[0].run()
    assert [(r.id, r.state.value) for r in wait(q, [job.id])] == [(job.id, "done")]
    try:
        wait(q, [job.id, "20990101-000000-000000-00000000"])
        raise AssertionError("an unknown id must fail the wait")
    except UnknownJob:
        pass
    assert inotify_fds() == before
