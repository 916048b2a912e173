"""A claim: one job taken by one processor, and everything that happens to it.

Identity.  A processor's claims carry its ``Claimer`` name: host name (for
people), kernel boot id, PID namespace, PID and the process's start time.
Host names repeat (clones, containers), PIDs and start times start again
after a reboot, and PID namespaces hide processes from each other, so a claim
is judged dead from its name alone only when it is *provably* dead: same boot
and same PID namespace as the judge, and no process with that PID and start
time.  Everything else is judged by its lease.

Leases.  The holder renews each claim every quarter of the lease by setting
the claim file's modification time to "now" as the file server sees it
(utime with no time: NFS sends SET_TO_SERVER_TIME).  Another processor
judges expiry by comparing that time with the server's "now", read from the
mtime of a probe file it just touched itself (clock.py).  Both times
come from the file server's clock, so clocks of the machines may disagree
freely.  A claim whose lease expired is taken over by any processor.

Taking.  Every change of a claim's owner is a single rename to a name unique
to the new owner (from ``queue/``, ``delayed/`` or another claim); the new
owner then checks that *its* name exists, because over NFS a rename may report
an error after it succeeded.  The entry's time is set to "now" just before the
rename, so a new claim never shows an old time (an expired lease) to others.  A takeover rewrites the claim at once (a new
inode), so the old holder's next renewal fails even through stale NFS caches.

Fencing.  A claim ends by staging what it publishes (the record, or the job
again in ``delayed/`` or ``queue/``) in ``tmp/``, then renaming its own claim
to ``ID@CLAIMER.done``.  That rename fails if the claim was taken over
meanwhile: the holder then knows it lost the job and publishes nothing.
Only after the fence does it publish the staged file, with link(2), which
never replaces an existing record, and then remove the fenced file.  A
holder that stalls after its fence for longer than the lease is taken over
like any other; its successor publishes the holder's staged file rather than
run the job again (ending.py), so the job is recorded once.  A crash at any
point leaves a claim or a fenced file in ``running/``; recovery finds the
job's newer state elsewhere (then the leftover is removed), publishes the
staged end, or runs the job again (at-least-once).

Unusable entries.  A claimed entry that is not a usable job is rejected: a
record in ``failed/`` says why (with its first bytes only if it was a regular
file with a single link); the entry itself goes to ``rejected/`` when it may
hold data (a regular file, a directory), and is removed otherwise (a FIFO, a
socket, a symbolic link, a hard link to another file).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from ..core import cgroup, files
from ..core.files import Unusable, dump, read_untrusted
from ..core.job import SCHEMA, Job, State, hostname, new_id
from ..core.proc import Claimer
from ..core.result import Cause, Outcome, Result
from . import ending
from .clock import ServerClock
from .layout import Layout, is_id, parse_claim_name

_GONE = (errno.ENOENT, errno.ESTALE)


class LeaseLost(Exception):
    """The claim was taken over by another processor; publish nothing."""


def _touch_if_ours(source: Path) -> bool | None:
    """Start a claim's lease before the rename that takes it, so no one ever
    sees the new claim with the file's old time (an expired lease); None if
    ``source`` is gone.

    Only a regular file with a single link is touched, and the very file
    checked (through one descriptor): a symbolic link, a FIFO or a hard link
    to someone else's file is claimed (and then rejected) untouched, so the
    file it leads to is never changed.  False when it was not touched."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return False  # a symbolic link, or not ours to open: claimed untouched
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        os.utime(fd, None)
        return True
    except OSError:
        return False  # not ours to touch (then the rename fails too) or gone over NFS
    finally:
        os.close(fd)


def _rename_to_own(src: Path, dst: Path) -> bool:
    """Rename ``src`` to a name only we use; True if we now hold ``dst``."""
    try:
        os.rename(src, dst)
    except OSError as e:
        # Over NFS a retransmitted rename can fail although the first
        # attempt succeeded: only the presence of our own name decides.
        if e.errno not in (*_GONE, errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR, errno.ENOTDIR):
            raise
    return files.lstat(dst) is not None


class Claim:
    """A job (or an unusable entry) this processor holds in ``running/``."""

    __slots__ = ("fenced", "follow_up", "id", "job", "layout", "lost", "me", "owner", "path", "renewed", "source", "stage", "unusable")

    def __init__(self, layout: Layout, me: Claimer, id: str, path: Path, source: str) -> None:  # noqa: A002 - the job's id
        self.layout, self.me, self.id, self.path = layout, me, id, path
        #: Where it came from, for messages: "queue/NAME", "delayed/NAME"...
        self.source = source
        self.job: Job | None = None
        self.unusable: Unusable | None = None
        #: (uid, gid) owning the file: who submitted it (README, "Shared servers").
        self.owner: tuple[int, int] = (0, 0)
        self.fenced = False
        self.lost = False
        #: The follow-up job the end of this claim's job queued (followup.py).
        self.follow_up: Job | None = None
        #: What this claim's end publishes, staged before the fence (ending.py).
        self.stage: Path | None = None
        self.renewed = time.monotonic()

    def __repr__(self) -> str:
        return f"Claim({self.id!r}, {self.source!r}, path={str(self.path)!r})"

    # -- taking ---------------------------------------------------------------

    @classmethod
    def take(cls, layout: Layout, source: Path, me: Claimer, job_id: str | None = None) -> Claim | None:
        """Take ``source`` (an entry of queue/, delayed/ or running/); None if
        another processor was faster.  The result holds the parsed job or the
        reason it is unusable."""
        own_id = job_id if job_id and is_id(job_id) else new_id()
        dst = layout.claim(own_id, me.name)
        if _touch_if_ours(source) is None:
            return None
        if not _rename_to_own(source, dst):
            return None
        # The claim is on disk before its job can start: after a power cut the
        # job is found claimed (and recovered, interrupted), never queued again
        # as if it had not run.  One journal commit holds both directories'
        # change on ext4 and xfs.
        files.fsync_dir(layout.running)
        claim = cls(layout, me, own_id, dst, f"{source.parent.name}/{source.name}")
        claim.load(expect_id=job_id)
        if claim.job is not None and layout.on_nfs:
            # Reading the claim may have given this machine an NFSv4 read
            # delegation on it, kept for a minute or two: had this machine
            # then lost power, the file server would hold back every other
            # machine's rename of the claim until its own lease time (90 s by
            # default) ran out.  A claim written afresh (opened write-only)
            # carries no delegation.
            claim.rewrite(claim.job)
        return claim

    def load(self, expect_id: str | None) -> None:
        """Read the claimed entry, trusting nothing (files.py)."""
        try:
            data, st = read_untrusted(self.path, claim=True)
            self.owner = (st.st_uid, st.st_gid)
            job = Job.from_json(files.load_json(data))
            if expect_id is not None and job.id != expect_id:
                raise Unusable(f"its file name {self.source!r} does not match its job id {job.id!r}", data[: files.KEEP_BYTES])
            self.job = job
        except FileNotFoundError:
            self.unusable = Unusable("it vanished while being read")
        except Unusable as e:
            self.unusable = e
        except ValueError as e:
            self.unusable = Unusable(f"it is not a usable job file: {e}", data[: files.KEEP_BYTES])

    # -- holding --------------------------------------------------------------

    def renew(self) -> bool:
        """Renew the lease; False (and ``lost``) if the claim was taken over."""
        if self.lost:
            return False
        try:
            os.utime(self.path, None)
        except OSError as e:
            if e.errno not in _GONE:
                raise
            self.lost = True
            return False
        self.renewed = time.monotonic()
        return True

    def renew_if_due(self, lease: float) -> bool:
        if time.monotonic() - self.renewed >= lease / 4:
            return self.renew()
        return not self.lost

    def rewrite(self, job: Job) -> None:
        """Store ``job`` as the claim's content (a new inode; see the module comment)."""
        files.write_durably(self.layout.tmp, self.path, dump(job.to_json()), owner=self._chown())
        self.job = job

    def _chown(self) -> tuple[int, int] | None:
        return self.owner if os.geteuid() == 0 and self.owner[0] != 0 else None

    def _fence(self) -> None:
        if self.fenced:
            return
        target = self.layout.claim(self.id, self.me.name, finishing=True)
        if not _rename_to_own(self.path, target):
            self.lost = True
            raise LeaseLost(f"job {self.id} was taken over by another processor")
        self.path, self.fenced = target, True

    def _release(self, entry: bool = True) -> None:
        if entry:
            self.path.unlink(missing_ok=True)
        ending.remove(self.stage)
        self.layout.cancel_request(self.id).unlink(missing_ok=True)

    def _stage_and_fence(self, target: Path, data: bytes) -> None:
        """Stage the end, then fence; once fenced, never stage again (ending.py)."""
        if self.fenced:
            return
        self.stage = ending.stage(self.layout, target, self.me.name, data, self._chown())
        try:
            self._fence()
        except BaseException:
            ending.remove(self.stage)
            self.stage = None
            raise

    def _publish(self, target: Path, data: bytes) -> bool:
        """Link the staged end at ``target``: True once it is there, False if
        another file is.  ``LeaseLost`` if a processor that took over the
        fenced claim removed the stage without publishing it."""
        assert self.stage is not None
        try:
            return ending.publish(self.stage, target)
        except FileNotFoundError:
            # Taken over after the fence: published by the successor, or not at all.
            try:
                if read_untrusted(target, single_link=False)[0] == data:
                    return True
            except (FileNotFoundError, Unusable):
                pass
            self.lost = True
            raise LeaseLost(f"job {self.id} was taken over by another processor") from None

    # -- ending ---------------------------------------------------------------

    def finish(self, job: Job, result: Result) -> tuple[State, Path]:
        """Publish the final record of ``job`` (whose attempts end with
        ``result``) and release the claim.  ``LeaseLost`` if it was lost.
        Its follow-up is queued first, its unique key given back after."""
        from . import unique
        from .followup import queue_follow_up

        state = State.DONE if result.succeeded else State.FAILED
        final = self.layout.record(state, self.id)
        data = dump(job.record(result, state))
        self._stage_and_fence(final, data)
        self.follow_up = queue_follow_up(self.layout, job, result, self.owner) or self.follow_up
        if not self._publish(final, data):
            final = self._conflict(final, result, data)
        self._release()
        unique.give_back(self.layout, job.unique, unique.key_owner(self.owner[0]), self.id)
        return state, final

    def _conflict(self, final: Path, result: Result, data: bytes) -> Path:
        """A record already exists: ours from an earlier try, or another run's."""
        try:
            existing = Result.from_json(files.load_json(read_untrusted(final, single_link=False)[0]).get("result"))
            if result.run is not None and existing.run == result.run:
                return final
        except (Unusable, ValueError, AttributeError, FileNotFoundError):
            pass
        # Never replace another run's record: keep ours beside it for inspection.
        aside = self.layout.rejected / f"{self.id}@{self.me.name}.json"
        files.write_durably(self.layout.tmp, aside, data)
        return aside

    def postpone(self, job: Job, due: float | None) -> Path:
        """Move the job to ``delayed/`` until ``due`` (None: its dependencies)."""
        return self._move(self.layout.delayed_entry(self.id, due), job)

    def requeue(self, job: Job) -> Path:
        """Put the job back in ``queue/`` with its priority."""
        return self._move(self.layout.queued(job.schedule.priority, self.id), job)

    def _move(self, entry: Path, job: Job) -> Path:
        data = dump(job.to_json())
        self._stage_and_fence(entry, data)
        self._publish(entry, data)
        self._release()
        return entry

    def reject(self) -> Path:
        """Record an unusable entry as rejected (see the module comment)."""
        assert self.unusable is not None
        self._fence()
        reason = f"unusable job file: {self.unusable.reason}"
        record = {"miniq": SCHEMA, "id": self.id, "state": State.FAILED.label, "queued_as": self.source}
        if self.unusable.original is not None:
            record["original"] = self.unusable.original.decode("utf-8", "backslashreplace")
        record["result"] = Result.unrun(Outcome.REJECTED, reason, hostname()).to_json()
        final = self.layout.record(State.FAILED, self.id)
        files.write_durably(self.layout.tmp, final, dump(dict(record, quarantined=self._quarantine(dry_run=True))), replace=False)
        self._quarantine()
        self._release(entry=False)
        return final

    def _quarantine(self, dry_run: bool = False) -> str | None:
        """Move the entry to ``rejected/``, or remove it if it holds no data of
        its own (module comment); returns where it went."""
        st = files.lstat(self.path)
        if st is None:
            return None
        target = self.layout.rejected / f"{self.id}-{self.source.replace('/', '-')}"
        if not (stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)):
            if not dry_run:
                self.path.unlink()
            return None
        if not dry_run:
            self.layout.rejected.mkdir(mode=0o700, exist_ok=True)
            os.rename(self.path, target)
        return f"rejected/{target.name}"

    def forget(self) -> None:
        """Remove a claim whose job already has a newer state elsewhere."""
        self._release()


# -- finding claims whose holder is gone ------------------------------------------


class Stale(NamedTuple):
    """A claim (or fenced run) in ``running/`` whose holder is gone."""

    path: Path
    id: str
    holder: Claimer | None
    why: str

    @property
    def host(self) -> str:
        return self.holder.host if self.holder else "an unknown host"


def stale_claims(layout: Layout, me: Claimer, lease: float, clock: ServerClock) -> Iterator[Stale]:
    """Claims in ``running/`` that anyone may take over now, and why."""
    files.revalidate(layout.running)
    try:
        names = sorted(os.listdir(layout.running))
    except FileNotFoundError:
        return
    for name in names:
        parsed = parse_claim_name(name)
        path = layout.running / name
        if parsed is None:
            yield Stale(path, "", None, "it is not a claim miniq made")
            continue
        job_id, holder_name, _ = parsed
        if holder_name == me.name:
            continue
        holder = Claimer.parse(holder_name)
        if holder is not None and holder.provably_dead(me):
            yield Stale(path, job_id, holder, f"its processor (PID {holder.pid} on {holder.host}) died")
            continue
        seconds = clock.age(path)
        if seconds is not None and seconds > lease:
            who = holder.host if holder else "its host"
            yield Stale(path, job_id, holder, f"{who} stopped renewing its lease {seconds:.0f} s ago (lease {lease:g} s)")


def take_over(layout: Layout, stale: Stale, me: Claimer) -> Claim | None:
    """Take a stale claim; None if another processor was faster.

    A job found in a newer state elsewhere (its record was published, it was
    queued again) makes the claim a leftover: it is removed and None returned.
    Otherwise the returned claim's job has an ``interrupted`` attempt added.
    """
    claim = Claim.take(layout, stale.path, me, stale.id or None)
    if claim is None:
        return None
    if claim.job is None:
        return claim
    # What the old holder staged for its end, looked up once (ending.py).
    staged = ending.find(layout, claim.id, stale.holder.name) if stale.holder else None
    if ending.newer_state(layout, claim.id):
        claim.forget()
        ending.remove(staged[0] if staged else None)
        return None
    if stale.holder is not None and stale.path.name.endswith(".done"):
        if ending.complete(layout, claim.id, staged, claim.path.name, claim.owner):
            claim.forget()
            return None
    # A stage made before a fence the old holder can no longer pass is left over.
    ending.remove(staged[0] if staged else None)
    if stale.holder is not None and (stale.holder.boot, stale.holder.pidns) == (me.boot, me.pidns):
        # What is left of its run on this machine stops before the job may run
        # again or be recorded: a processor's recovery, cancel, requeue.
        cgroup.stop(cgroup.scope_name(claim.id), cgroup.STOP_GRACE)
    # Judged on the machine that ran it, which kept running: its processor died
    # there (the job may be why); else its machine was lost (result.Cause).
    same_machine = stale.holder is None or (stale.holder.boot, stale.holder.pidns) == (me.boot, me.pidns)
    cause = Cause.DIED if same_machine else Cause.LOST
    note = Result.unrun(Outcome.INTERRUPTED, stale.why, me.host, lost_host=stale.host, run=stale.holder.name if stale.holder else None,
                        cause=cause.value)  # fmt: skip
    claim.rewrite(claim.job.but(attempts=(*claim.job.attempts, note)))
    return claim


def clean_tmp(layout: Layout, me: Claimer | None = None, now: Callable[[], float] = time.time, older_than: float = 3600.0) -> None:
    """Remove what crashes left in ``tmp/``: clock probes and staging files
    of processes that are provably dead, or older than ``older_than`` by the
    clock ``now`` (a processor passes its ``ServerClock``'s, which reads the
    server once a second at most; it is asked only when there is something to judge).

    Age is the file's ctime, never its mtime.  Over NFSv4 a file created with
    O_EXCL carries the client's create verifier as its mtime until the
    client's SETATTR that completes the open(2); the Linux client's verifier
    is its jiffies, which read as a time in 1970 from five minutes after boot.
    A processor on another machine looking in that moment would take a live
    writer's file for an old one.  The ctime is set by the file server alone.
    """
    try:
        entries = list(os.scandir(layout.tmp))
    except OSError:
        return
    for entry in entries:
        try:
            if ending.held_by_fenced_claim(layout, entry.name):
                continue  # whoever recovers the claim publishes it (ending.py)
            writer = entry.name[len("clock@") :] if entry.name.startswith("clock@") else files.staging_writer(entry.name)
            holder = Claimer.parse(writer) if writer else None
            if holder is not None and me is not None and holder != me and holder.provably_dead(me):
                os.unlink(entry.path)
                continue
            if not entry.name.startswith(("clock@", ".")):
                continue
            if entry.stat(follow_symlinks=False).st_ctime < now() - older_than:
                if entry.is_dir(follow_symlinks=False):
                    import shutil  # (with its compression modules) only here

                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        except OSError:
            continue


def clean_rejected(layout: Layout, retention: float, now: Callable[[], float] = time.time) -> list[str]:
    """Remove what ``rejected/`` kept for inspection longer than ``retention``
    seconds (``[processor] rejected-retention``), judged by ctime (when it was
    rejected, which renamed it there); the names removed."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(layout.rejected))
    except OSError:
        return removed
    cutoff = now() - retention
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_ctime >= cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                import shutil

                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(entry.name)
        except OSError:
            continue
    return removed
