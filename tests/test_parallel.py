"""Several jobs at once: one worker process per slot."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from helpers import processor, write_job

from miniq.store.queue import Queue


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


# -- slots that stay open ---------------------------------------------------------

BLOCKER = '#!/bin/sh\ntouch "$MINIQ_ROOT/started-$1"\nwhile [ ! -e "$MINIQ_ROOT/release-$1" ]; do sleep 0.05; done\n'


def _processor(root: Path, parallel: int, linger: float) -> subprocess.Popen[str]:
    """A processor of its own (it forks its workers: not from pytest's threads)."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from helpers import processor\n"
        f"p, _ = processor(Path(sys.argv[2]), parallel={parallel}, linger={linger}); print(p.run().describe())\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent), str(root)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def _until(what: Callable[[], bool], timeout: float = 30.0, root: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            shown = {d: sorted(os.listdir(root / d)) for d in ("queue", "delayed", "running", "done", "failed")} if root else {}
            raise AssertionError(f"not within {timeout:g} s: {shown}")
        time.sleep(0.05)


def _finished(q: Queue, job_id: str) -> bool:
    return q.read(job_id).finished


def test_every_free_slot_takes_a_new_job_while_a_long_one_runs(root: Path) -> None:
    """parallel 4, one job that runs until released: jobs queued one after
    another, and one queued after every other slot went idle for longer than
    linger, all run and end while it still runs (before, the idle workers had
    left after linger, and new jobs waited for the long one's worker)."""
    write_job(root, "block", BLOCKER)
    q = Queue(root)
    long = q.enqueue("block", ["long"]).id
    proc = _processor(root, parallel=4, linger=0.5)
    try:
        _until(lambda: (root / "started-long").exists())
        for i in range(3):
            short = q.enqueue("echo", [str(i)]).id
            _until(lambda job=short: _finished(q, job))
        time.sleep(1.5)  # every other slot idle for three times linger
        late = q.enqueue("echo", ["late"]).id
        _until(lambda: _finished(q, late))
        assert q.read(long).state.label == "running" and proc.poll() is None
        (root / "release-long").touch()
        out, err = proc.communicate(timeout=30)  # every slot idle: the processor ends
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith("processed 5 job(s): 5 succeeded"), out


def test_a_freed_type_slot_is_taken_by_a_waiting_job_of_that_type(root: Path) -> None:
    write_job(root, "block", BLOCKER)
    (root / "miniq.conf").write_text("[job:block]\nparallel = 1\n")
    q = Queue(root)
    first = q.enqueue("block", ["first"]).id
    proc = _processor(root, parallel=3, linger=0.5)
    try:
        _until(lambda: (root / "started-first").exists())  # running, so holding its type's slot (claimed is not enough)
        second = q.enqueue("block", ["second"]).id
        _until(lambda: q.read(second).held, root=root)  # its type is at its cap
        other = q.enqueue("echo", ["passes"]).id  # another type passes it
        _until(lambda: _finished(q, other))
        time.sleep(1.0)  # the free slots idle past linger: they must stay
        (root / "release-second").touch()
        (root / "release-first").touch()
        _until(lambda: _finished(q, second))
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out.startswith("processed 3 job(s): 3 succeeded"), out
    assert q.read(first).state.label == "done"
