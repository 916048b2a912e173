"""One bad entry never stops the queue, and nothing of a link's target leaks.

Every kind of planted entry (tests/planted.py) in queue/, delayed/ and
running/, followed by a good job: the good job runs, the processor finishes
normally, the entry is recorded as rejected with its reason, and no byte of
a link's target appears anywhere under the root.  The same runs against real
systemd in tests/integration/robustness_checks.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import process
from planted import PLANTS, Plant, leaked, plant_name

from miniq.core.job import new_id
from miniq.store.queue import Queue


@pytest.mark.parametrize("where", ["queue", "delayed", "running"])
@pytest.mark.parametrize("plant", PLANTS, ids=[p.kind for p in PLANTS])
def test_a_planted_entry_is_rejected_and_the_good_job_runs(root: Path, tmp_path: Path, plant: Plant, where: str) -> None:
    q = Queue(root)
    q.ensure_layout()
    outside = tmp_path / "outside"
    outside.mkdir()
    bad_id = new_id()
    plant.make(root / where / plant_name(where, bad_id), outside, lambda p: p)
    # Whatever a planted link leads to is never touched: not even its times.
    for target in outside.iterdir():
        os.utime(target, (946684800, 946684800), follow_symlinks=False)
    good = q.enqueue("echo", ["good"])
    sink, summary = process(root)
    assert {t.name: os.lstat(t).st_mtime for t in outside.iterdir()} == {t.name: 946684800 for t in outside.iterdir()}
    assert summary.succeeded == [good.id]
    assert sorted(os.listdir(root / "queue")) == [] and os.listdir(root / where) == []
    records = [json.loads(p.read_text()) for p in (root / "failed").iterdir()]
    assert len(records) == 1, records
    assert records[0]["result"]["outcome"] == "rejected" and records[0]["result"]["reason"].startswith("unusable job file: ")
    assert leaked(root) == []


def test_reading_a_running_job_leaves_no_clock_file(root: Path) -> None:
    """show, logs and list of a running job read the file server's clock: its probe goes at once."""
    from miniq.core.proc import Claimer
    from miniq.store.claims import Claim
    from miniq.store.layout import Layout

    q = Queue(root)
    job = q.enqueue("echo", [])
    claim = Claim.take(Layout(root), next((root / "queue").iterdir()), Claimer.current(), job.id)
    assert claim is not None
    for _ in range(3):
        record = q.read(job.id)
        assert record.lease is not None and not record.lease.expired
        list(q.records())
    assert os.listdir(root / "tmp") == []


def test_a_clock_file_of_a_dead_process_is_removed(root: Path) -> None:
    import subprocess

    from miniq.core.proc import Claimer
    from miniq.store.claims import clean_tmp
    from miniq.store.layout import Layout

    Queue(root).ensure_layout()
    me = Claimer.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = Claimer(me.host, me.boot, me.pidns, dead.pid, 1)
    live = Claimer(me.host, "f" * 32, me.pidns, 1, 1)  # another machine's: judged by age only
    for claimer in (gone, live):
        (root / "tmp" / f"clock@{claimer.name}").touch()
        (root / "tmp" / f".1000-x.json~{claimer.name}~0a1b2c3d.tmp").write_text("{}\n")  # a staging file of its
    mine = root / "tmp" / f".1000-y.json~{me.name}~0a1b2c3d.tmp"
    mine.write_text("{}\n")
    clean_tmp(Layout(root), me)
    assert sorted(os.listdir(root / "tmp")) == sorted([f"clock@{live.name}", f".1000-x.json~{live.name}~0a1b2c3d.tmp", mine.name])
    # What NFSv4 shows of a file another machine is creating with O_EXCL, until its
    # SETATTR: the create verifier (that client's jiffies) as the mtime, here 1970.
    for name in os.listdir(root / "tmp"):
        os.utime(root / "tmp" / name, (75000, 75000))
    clean_tmp(Layout(root), me)
    assert len(os.listdir(root / "tmp")) == 3
    clean_tmp(Layout(root), me, now=lambda: time.time() + 3700)  # an hour after their ctime
    assert os.listdir(root / "tmp") == []


def test_cleaning_tmp_on_a_full_disk_keeps_what_it_cannot_judge(root: Path) -> None:
    """The server clock is a probe file in tmp/: on a full disk it cannot be made.
    A processor's start then removes only what is provably dead, and goes on."""
    import errno
    import subprocess

    from miniq.core.proc import Claimer
    from miniq.store.claims import clean_tmp
    from miniq.store.layout import Layout

    Queue(root).ensure_layout()
    me = Claimer.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = Claimer(me.host, me.boot, me.pidns, dead.pid, 1)
    other = Claimer(me.host, "f" * 32, me.pidns, 1, 1)
    for claimer in (gone, other):
        (root / "tmp" / f".1000-x.json~{claimer.name}~0a1b2c3d.tmp").write_text("{}\n")

    def full() -> float:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root / "tmp" / "clock@x"))

    clean_tmp(Layout(root), me, full)
    assert os.listdir(root / "tmp") == [f".1000-x.json~{other.name}~0a1b2c3d.tmp"]


def test_a_spare_keeper_that_died_is_replaced_and_every_keeper_ends_with_its_lifeline() -> None:
    """scope.py, without systemd: a spare keeper killed between two jobs is
    not handed to the next scope; a keeper is a child reading the runner's
    lifeline pipe, which ends it once the runner's write end is closed (as
    when its processor dies, however)."""
    import signal

    from miniq.run.scope import ScopeRunner

    runner = ScopeRunner.__new__(ScopeRunner)  # no bus: only the keeper's part
    runner.spare, runner._lifeline = None, None
    first = runner._keeper()
    runner.spare = first
    os.kill(first, signal.SIGKILL)
    time.sleep(0.05)
    second = runner._keeper()
    assert second != first and runner.spare is None
    # posix_spawn returns once the child's exec has begun; the kernel renames
    # it a moment later.
    deadline = time.monotonic() + 10
    while (comm := Path(f"/proc/{second}/comm").read_text().strip()) != "cat":
        assert time.monotonic() < deadline, comm
        time.sleep(0.001)
    assert os.waitpid(second, os.WNOHANG) == (0, 0)  # waits on the pipe
    assert runner._lifeline is not None
    for fd in runner._lifeline:
        os.close(fd)
    deadline = time.monotonic() + 10
    while os.waitpid(second, os.WNOHANG) == (0, 0):
        assert time.monotonic() < deadline, "the keeper outlived its lifeline"
        time.sleep(0.01)


def test_rejected_entries_are_kept_for_their_retention_then_removed(root: Path) -> None:
    """rejected/ is for inspection, not forever (rejected-retention): doctor
    counts what is there, purge and a processor remove what is older."""
    from helpers import process

    from miniq.cli.doctor import _leftovers
    from miniq.store.queue import Queue

    q = Queue(root)
    q.ensure_layout()
    (root / "queue" / "0000-not-a-job.json").write_text("{broken")
    (root / "miniq.conf").write_text("[processor]\nrejected-retention = 2s\n")
    process(root)
    [kept] = [p.name for p in (root / "rejected").iterdir()]
    assert kept.endswith("-queue-0000-not-a-job.json"), kept
    [finding] = list(_leftovers(q))
    assert not finding.ok and finding.text.startswith(f"1 in {root}/rejected (entries the processor could not use")
    assert [r for r in q.purge(3600.0, dry_run=True) if r.startswith("rejected/")] == []  # not an hour old
    assert [r for r in q.purge(0.0, dry_run=True) if r.startswith("rejected/")] == [f"rejected/{kept}"]
    time.sleep(2.1)
    sink, _ = process(root)  # older than its retention: the next processor removes it, and says so
    assert list((root / "rejected").iterdir()) == []
    assert f"rejected/{kept} removed: kept longer than rejected-retention (2 s)" in sink.text()
    assert [f.text for f in _leftovers(q)] == ["nothing left over in rejected/ or tmp/"]
