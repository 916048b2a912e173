"""The queue: the library API behind every command.

``Queue(root)`` submits jobs, finds them by id, and operates on them
(cancel, retry, requeue, purge).  The file names are layout.py's, and every
change of a claimed job goes through claims.py.  Finding a job costs the
same whatever the queue's length: it probes exact names (the priority markers
say which priorities to try) and lists only ``running/``, which holds one
entry per running job; ``delayed/`` is listed only for jobs waiting for a time.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..core import files
from ..core.errors import BadInput, MiniqError, UnknownJob, os_failure
from ..core.files import MAX_FILE, dump
from ..core.job import Job, State, hostname
from ..core.limits import Limits
from ..core.schedule import Schedule
from .layout import Layout, is_id, parse_claim_name

if TYPE_CHECKING:
    from ..core.caller import Caller
    from ..core.proc import Claimer
    from .claims import Stale
    from .policy import Admitted, Owner
    from .records import Record

# Imported where used (records, claims, result): `miniq enqueue` needs none of them.

LOOKUP_PASSES = 5  # a job moving between states is looked for again (README)


class Queue:
    """A miniq root directory and the operations on it.

    With a ``caller`` (the system queue's helper, server.py), every operation is
    on the caller's own jobs only: what they submit becomes theirs, and a job
    of another user is refused with ``NotPermitted``.
    """

    def __init__(self, root: Path, caller: Caller | None = None) -> None:
        self.root = Path(root)
        self.layout = Layout(self.root)
        self.caller = caller if caller is not None and not caller.is_root else None
        self._lease: float | None = None
        self._laid_out = False

    def dir(self, state: State) -> Path:
        return self.layout.dir(state)

    # -- setting up ---------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create the root and its directories if missing: readable by the
        owner only (README, "The queue on disk"); job types are not secret.
        A root's queue lets others through its root (0711), to reach the job
        types a job run as its submitter executes, and nothing else."""
        try:
            for d in self.layout.all_dirs():
                mode = 0o755 if d == self.layout.jobs else 0o711 if d == self.root and os.geteuid() == 0 else 0o700
                d.mkdir(mode=mode, parents=True, exist_ok=True)
        except OSError as e:
            raise MiniqError(
                f"cannot create the queue directories under {self.root}: {e.strerror}",
                hint="check that the root is writable by you, or choose another with MINIQ_ROOT or --root",
            ) from None

    def job_type(self, name: str) -> Path:
        """The executable for job type ``name``; ``BadInput`` if it cannot run (jobtypes.py)."""
        from .policy import check_type

        check_type(self.layout, name)
        return self.layout.job_type(name)

    # -- submitting ---------------------------------------------------------

    def owner(self, file_owner: int | None = None) -> Owner:
        """Whose a job of this queue is: the caller's (the helper), that of
        ``file_owner`` (a root process acting for a user), else ours."""
        from .policy import Owner

        if self.caller is not None:
            return Owner.of(self.caller.uid)
        if file_owner is not None and file_owner != os.geteuid():
            return Owner.of(file_owner)
        return Owner.current()

    def enqueue(
        self,
        name: str,
        argv: list[str] | tuple[str, ...],
        limits: Limits = Limits(),
        schedule: Schedule = Schedule(),
        owner: tuple[int, int] | None = None,
        unique: str | None = None,
        on_success: str | None = None,
        on_failure: str | None = None,
    ) -> Job:
        """Validate and atomically publish a new job; returns it with its id.

        ``owner`` (uid, gid) makes the job file that user's: the system queue
        runs a job as the owner of its file (README, "Shared servers").
        ``unique`` is a key (unique.py): if an unfinished job holds it, nothing
        is added and ``AlreadyQueued`` names that job.  ``on_success`` and
        ``on_failure`` are job types queued when it ends (followup.py).
        Everything is judged by the one gate first (policy.py).
        """
        from .policy import Ask, Door, admit

        if self.caller is not None:
            owner = (self.caller.uid, self.caller.gid)
        follow_ups = tuple(f for f in (on_success, on_failure) if f is not None)
        ask = Ask(name, tuple(argv), limits, schedule, follow_ups, unique)
        admitted = admit(self.layout, Door.ENQUEUE, [ask], self.owner(owner[0] if owner else None))
        self.check_dependencies(schedule)
        job = Job.new(name, argv, limits, schedule, uid=owner[0] if owner else None, pid=self.caller.pid if self.caller else None)
        job = job.but(unique=unique, on_success=on_success, on_failure=on_failure)
        data = dump(job.to_json())
        if len(data) > MAX_FILE:
            raise BadInput(f"the job is {len(data)} bytes as a file, over the {MAX_FILE} bytes miniq accepts: pass less data as arguments")
        if not self._laid_out:
            self.ensure_layout()
            self._laid_out = True
        self.publish(admitted, job, data, owner)
        return job

    def publish(self, admitted: Admitted, job: Job, data: bytes, owner: tuple[int, int] | None) -> None:
        """Write a new job that passed the gate where it waits: ``queue/``, or
        ``delayed/`` for a time or its dependencies (durably: files.py)."""
        from . import unique as keys

        assert admitted.asks[0].name == job.name
        schedule, unique = job.schedule, job.unique
        key_owner = owner[0] if owner else os.geteuid()
        try:
            if unique is not None:
                keys.take(self.layout, unique, key_owner, job.id, owner)
            if schedule.waits(time.time()):
                due = None if schedule.after else schedule.not_before
                files.write_durably(self.layout.tmp, self.layout.delayed_entry(job.id, due), data, owner=owner)
                self.wake()
            else:
                if schedule.priority:
                    self.layout.priority_marker(schedule.priority).touch()
                files.write_durably(self.layout.tmp, self.layout.queued(schedule.priority, job.id), data, owner=owner)
        except OSError as e:
            if unique is not None:
                keys.give_back(self.layout, unique, key_owner, job.id)
            raise os_failure(f"cannot write to the queue under {self.root}", e) from None

    def check_dependencies(self, schedule: Schedule) -> None:
        """``BadInput`` unless every job ``schedule`` runs after exists (ids are the gate's)."""
        for dep in schedule.after:
            try:
                self.locate(dep)
            except UnknownJob:
                raise BadInput(f"no job with id '{dep}' to run after, under {self.root}") from None

    def wake(self) -> None:
        """Make the path unit start the processor, e.g. to arm a timer."""
        self.layout.wake.touch()

    # -- looking up ---------------------------------------------------------

    def _probe(self, job_id: str) -> tuple[State, Path] | None:
        for state, path in self.layout.candidates(job_id):
            if os.path.lexists(path):
                return state, path
        for state in (State.RUNNING, State.DELAYED):
            found = self.layout.scan(state, job_id)
            if found is not None:
                return state, found
        return None

    def locate(self, job_id: str) -> tuple[State, Path]:
        """The state and file of a job by id; ``UnknownJob`` if absent.

        A job changing state is briefly in neither place a probe looks, so
        a miss is looked for again before it counts.
        """
        if not is_id(job_id):
            raise UnknownJob(f"no job with id '{job_id}' under {self.root}: expected an id as printed by miniq enqueue")
        self.check_access()
        for attempt in range(LOOKUP_PASSES):
            found = self._probe(job_id)
            if found:
                if self.caller is not None:
                    self.caller.check(_owner(found[1]), job_id)
                return found
            for d in (self.layout.running, *(self.dir(s) for s in (State.DONE, State.FAILED))):
                files.revalidate(d)
            time.sleep(0.002 * attempt)
        raise UnknownJob(f"no job with id '{job_id}' under {self.root}")

    def check_access(self) -> None:
        """``PermissionError`` if this queue is closed to the caller (not "no such job")."""
        for d in (self.root, self.layout.running):
            if d.exists() and not os.access(d, os.R_OK | os.X_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(d))

    @property
    def lease(self) -> float:
        """The lease of this queue's claims (miniq.conf; 60 s if it cannot be read)."""
        if self._lease is None:
            from .config import Config

            try:
                self._lease = Config.load(self.root).lease
            except MiniqError:
                self._lease = 60.0
        return self._lease

    def read(self, job_id: str) -> Record:
        """A job's record as stored, in whichever state it is now."""
        from . import records

        for _ in range(LOOKUP_PASSES):
            state, path = self.locate(job_id)
            try:
                if state is not State.RUNNING:  # a lease to judge: only then the clock and miniq.conf
                    return records.read(path, state, job_id)
                return records.read(path, state, job_id, records.server_clock(self.layout), self.lease)
            except FileNotFoundError:
                continue  # it moved on between finding and reading: look again
        raise UnknownJob(f"no job with id '{job_id}' under {self.root}")

    def visible(self, path: Path) -> bool:
        """Whether the caller may see the job in ``path`` (always, without a caller)."""
        return self.caller is None or _owner(path) == self.caller.uid

    def entries(self, state: State) -> Iterator[tuple[str, Path]]:
        """(job id, file) of every entry in ``state``, in no particular order."""
        try:
            with os.scandir(self.dir(state)) as it:
                names = [e.name for e in it if not e.name.startswith(".")]
        except FileNotFoundError:
            return
        for name in names:
            job_id = _id_of(state, name)
            if job_id:
                yield job_id, self.dir(state) / name

    def records(self, states: Iterable[State] = tuple(State)) -> Iterator[Record]:
        """Every job in ``states`` as stored; files gone meanwhile are skipped."""
        from . import records

        clock = records.server_clock(self.layout) if State.RUNNING in states else None
        for state in states:
            for job_id, path in self.entries(state):
                if not self.visible(path):
                    continue
                try:
                    yield records.read(path, state, job_id, clock, self.lease)
                except (FileNotFoundError, OSError):
                    continue

    # -- operating ------------------------------------------------------------

    def cancel(self, job_id: str, me: Claimer | None = None) -> State:
        """Cancel a job; returns the state it was in.

        A queued or delayed job is recorded as cancelled at once and never runs.
        For a running job a request is left in ``cancel/``: its processor stops
        the job's scope and records it as cancelled; a job whose processor is
        gone is cancelled when it is recovered, or here at once if its lease
        already expired.
        """
        from ..core.proc import Claimer
        from ..core.result import Outcome, Result
        from .claims import Claim

        me = me or Claimer.current()
        while True:
            state, path = self.locate(job_id)
            if state.is_final:
                raise BadInput(f"job {job_id} has already finished ({state.label}); nothing to cancel")
            if state is State.RUNNING:
                self.ensure_layout()
                files.write_durably(self.layout.tmp, self.layout.cancel_request(job_id), b"cancel\n")
                self._cancel_if_stale(job_id, me)
                return state
            claim = Claim.take(self.layout, path, me, job_id)
            if claim is None:
                continue  # it moved meanwhile (claimed or promoted): look again
            if claim.job is None:
                claim.reject()
            else:
                result = Result.unrun(Outcome.CANCELLED, f"cancelled while {state.label}", hostname())
                claim.finish(claim.job.but(attempts=(*claim.job.attempts, result)), result)
            return state

    def _cancel_if_stale(self, job_id: str, me: Claimer) -> None:
        from ..core.result import Outcome, Result
        from .claims import take_over

        stale = self.stale(job_id, me)
        if stale is None:
            return
        claim = take_over(self.layout, stale, me)
        if claim is not None and claim.job is not None:
            result = Result.unrun(Outcome.CANCELLED, f"cancelled; {stale.why}", hostname())
            claim.finish(claim.job.but(attempts=(*claim.job.attempts, result)), result)

    def stale(self, job_id: str, me: Claimer) -> Stale | None:
        """The claim of running job ``job_id`` if its holder is gone, else None."""
        from .claims import stale_claims
        from .clock import ServerClock

        clock = ServerClock(self.layout, me.name)
        try:
            return next((s for s in stale_claims(self.layout, me, self.lease, clock) if s.id == job_id), None)
        finally:
            clock.close()

    def requeue(self, job_id: str, force: bool = False) -> Path:
        """Queue a running job again at once whose holder is gone (``force``:
        whose host you know is gone although its lease has not expired yet)."""
        from ..core.proc import Claimer
        from .claims import Stale, take_over
        from .policy import Ask, Door, admit

        me = Claimer.current()
        state, path = self.locate(job_id)
        if state is not State.RUNNING:
            raise BadInput(f"job {job_id} is {state.label}, not running: nothing to requeue")
        stale = self.stale(job_id, me)
        if stale is None:
            if not force:
                raise BadInput(
                    f"job {job_id} is running and its processor's lease is live: it is not lost",
                    hint="if you know its host is gone for good, use --force",
                )
            parsed = parse_claim_name(path.name)
            holder = Claimer.parse(parsed[1]) if parsed else None
            stale = Stale(path, job_id, holder, f"requeued by {hostname()} with --force")
        if stale.id is not None:
            found = records_job(path, job_id)
            if found is not None:  # an unusable file is rejected below, whoever owns it
                admit(self.layout, Door.REQUEUE, [Ask.of(found)], self.owner(_owner(path)), counted=job_id)
        claim = take_over(self.layout, stale, me)
        if claim is None:
            raise MiniqError(f"job {job_id} changed state meanwhile; look again with: miniq show {job_id}")
        if claim.job is None:
            return claim.reject()
        return claim.requeue(claim.job)

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again, with the same id, arguments
        and attempts, if its owner may still queue it (policy.py)."""
        from .policy import Ask, Door, admit

        state, path = self.locate(job_id)
        if state is not State.FAILED:
            raise BadInput(f"job {job_id} is {state.label}: only failed or cancelled jobs can be retried")
        from . import records

        record = records.read(path, state, job_id)
        if record.job is None:
            raise BadInput(f"job {job_id} cannot be retried: its file is unusable ({record.problem})")
        job = record.job
        admitted = admit(self.layout, Door.RETRY, [Ask.of(job)], self.owner(_owner(path)))
        if job.unique is not None:
            from . import unique

            unique.take(self.layout, job.unique, unique.key_owner(_owner(path)), job.id)
        self.put_back(admitted, path, job)
        return job

    def put_back(self, admitted: Admitted, path: Path, job: Job) -> None:
        """Move a finished job that passed the gate again into ``queue/``."""
        assert admitted.asks[0].name == job.name
        self._drop_staging_links(path)
        # One rename: the job is in exactly one place at every moment.  The
        # record's own "state" and "result" are ignored in queue/.
        if job.schedule.priority:
            self.layout.priority_marker(job.schedule.priority).touch()
        files.move_durably(path, self.layout.queued(job.schedule.priority, job.id))

    def _drop_staging_links(self, path: Path) -> None:
        """Remove a staging name a crash left linked to ``path`` (files.py)."""
        st = os.lstat(path)
        if st.st_nlink == 1:
            return
        for entry in os.scandir(self.layout.tmp):
            if entry.inode() == st.st_ino and entry.name.startswith("."):
                os.unlink(entry.path)

    def purge(self, older_than: float, dry_run: bool = False, now: float | None = None) -> list[str]:
        """Remove finished records that ended at least ``older_than`` seconds
        ago, and (not through the helper) rejected entries that old."""
        from ..core.timeparse import timestamp
        from . import records

        cutoff = (time.time() if now is None else now) - older_than
        removed = []
        for state in (State.DONE, State.FAILED):
            for job_id, path in sorted(self.entries(state)):
                if not self.visible(path):
                    continue
                try:
                    record = records.read(path, state, job_id)
                    ended = timestamp(record.result.ended) if record.result and record.result.ended else os.lstat(path).st_mtime
                except (OSError, ValueError):
                    continue
                if ended <= cutoff:
                    if not dry_run:
                        path.unlink(missing_ok=True)
                    removed.append(job_id)
        if self.caller is None:  # rejected/ holds what was no job: root's (or the queue owner's) to clear
            removed += [f"rejected/{name}" for name in self._old_rejected(cutoff, dry_run)]
        return removed

    def _old_rejected(self, cutoff: float, dry_run: bool) -> list[str]:
        from .claims import clean_rejected

        if not dry_run:
            return clean_rejected(self.layout, 0.0, lambda: cutoff)
        try:
            return sorted(e.name for e in os.scandir(self.layout.rejected) if e.stat(follow_symlinks=False).st_ctime < cutoff)
        except OSError:
            return []


def records_job(path: Path, job_id: str) -> Job | None:
    """The job in the file at ``path``, or None if it is not a usable one."""
    from . import records

    try:
        return records.read(path, State.RUNNING, job_id).job
    except OSError:
        return None


def _owner(path: Path) -> int:
    try:
        return os.lstat(path).st_uid
    except OSError:
        return -1


def _id_of(state: State, name: str) -> str | None:
    """The job id in an entry name of ``state``, if it is one of ours."""
    from .layout import parse_delayed_name, parse_queue_name

    if state.is_final:
        stem = name[:-5] if name.endswith(".json") else ""
        return stem if is_id(stem) else None
    if state is State.QUEUED:
        parsed = parse_queue_name(name)
        return parsed[1] if parsed else None
    if state is State.DELAYED:
        delayed = parse_delayed_name(name)
        if delayed:
            return delayed[1]
        stem = name[:-5] if name.endswith(".json") else ""
        return stem if is_id(stem) else None
    claim = parse_claim_name(name)
    return claim[0] if claim else None
