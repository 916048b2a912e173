"""The queue on disk.  The directory a file sits in is its state.

Layout of a root::

    jobs/NAME.job     job types: executables, run as ``NAME.job ARGS...``
    queue/ID.json     queued, waiting to run (the path unit watches this);
                      ``ID.pN.json`` for priority N other than 0
    delayed/ID.json   waiting for its time, a retry's backoff or a dependency
                      (not watched: a transient timer wakes the processor)
    queue/wake        dropped by enqueue of a delayed job to start the
                      processor, which removes it and arms the timer
    running/ID@HOST@PID.START.json
                      claimed by the processor with that host, PID and
                      process start time
    done/ID.json      finished with exit code 0
    failed/ID.json    finished otherwise, or rejected (with the reason)
    cancel/ID         a request to cancel running job ID (see cancel())
    tmp/              staging for atomic writes (same file system)
    miniq.conf        optional configuration (see settings.py)

Invariants:
  * Files appear in ``queue/``, ``done/`` and ``failed/`` only by rename from
    ``tmp/`` after fsync (fsutil.write_durably), never partially written.
  * A claim is a single rename from ``queue/`` to a name in ``running/`` that
    only one processor can choose; the claimer then checks that *its* name
    exists, because over NFS rename may report an error after it succeeded.
  * A finished record is written before its ``running/`` file is removed, so a
    crash between the two leaves a duplicate, never a loss; recovery removes
    the duplicate.
  * Policy for a claim whose processor died (same host, PID gone or reused):
    the job goes back to ``queue/`` with an ``interrupted`` attempt recorded,
    and runs again from the start (at-least-once).  Claims held by other
    hosts are left to the processors of those hosts.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from . import fsutil
from .errors import BadInput, MiniqError, UnknownJob
from .job import ID_RE, SCHEMA, Job, Outcome, Schedule, State, check_name, dump, hostname, new_id, not_started, now_iso, queue_order
from .limits import Limits


def process_start_time(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses.
    return stat.rsplit(b")", 1)[1].split()[19].decode()


def claim_host() -> str:
    """This host's name as it appears in claim file names (no '@' or '/')."""
    return hostname().replace("@", "_").replace("/", "_")


def claimer_id() -> str:
    """This process's claim suffix: unique among all live processes of all hosts."""
    return f"{claim_host()}@{os.getpid()}.{process_start_time(os.getpid())}"


@dataclass(frozen=True)
class Claim:
    """A job file this processor owns, now in ``running/``."""

    id: str
    path: Path
    queued_name: str
    data: bytes


class Queue:
    """A miniq root directory and the operations on it."""

    #: Dropped in ``queue/`` to start the processor (path unit) without a job,
    #: so that it arms the timer for a newly delayed job.  Not a dot file:
    #: systemd's DirectoryNotEmpty= ignores those.
    WAKE = "wake"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.tmp_dir = self.root / "tmp"
        self.cancel_dir = self.root / "cancel"

    def dir(self, state: State) -> Path:
        return self.root / state.dirname

    # -- setting up ---------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create the root and its state directories if missing."""
        try:
            for d in (self.root, self.jobs_dir, self.tmp_dir, self.cancel_dir, *(self.dir(s) for s in State)):
                d.mkdir(mode=0o755, parents=True, exist_ok=True)
        except OSError as e:
            raise MiniqError(
                f"cannot create the queue directories under {self.root}: {e.strerror}",
                hint="check that the root is writable, or choose another with MINIQ_ROOT",
            ) from None

    def job_type(self, name: str) -> Path:
        """The executable for job type ``name``; ``BadInput`` if there is none."""
        check_name(name)
        path = self.jobs_dir / f"{name}.job"
        if not path.is_file():
            raise BadInput(f"no job type '{name}': expected an executable at {path}")
        if not os.access(path, os.X_OK):
            raise BadInput(f"job type '{name}' is not executable: expected an executable at {path} (chmod +x it)")
        return path

    # -- submitting ---------------------------------------------------------

    def enqueue(self, name: str, argv: list[str] | tuple[str, ...], limits: Limits = Limits(), schedule: Schedule = Schedule()) -> Job:
        """Validate and atomically publish a new job; returns it with its id."""
        self.job_type(name)
        for dep in schedule.after:
            if not ID_RE.fullmatch(dep):
                raise BadInput(f"invalid job id '{dep}' for --after: expected an id as printed by miniq enqueue")
            try:
                self.find(dep)
            except UnknownJob:
                raise BadInput(f"no job with id '{dep}' to run after, under {self.root}") from None
        job = Job.new(name, argv, limits, schedule)
        self.ensure_layout()
        try:
            if self.waits(job, time.time()):
                fsutil.write_durably(self.tmp_dir, self.dir(State.DELAYED) / f"{job.id}.json", job.to_bytes())
                self.wake()
            else:
                fsutil.write_durably(self.tmp_dir, self.dir(State.QUEUED) / job.queue_name, job.to_bytes())
        except OSError as e:
            raise MiniqError(f"cannot write to the queue {self.dir(State.QUEUED)}: {e.strerror}") from None
        return job

    @staticmethod
    def waits(job: Job, now: float) -> bool:
        return bool(job.schedule.after) or (job.schedule.not_before is not None and job.schedule.not_before > now)

    def wake(self) -> None:
        """Make the path unit start the processor, e.g. to arm a timer."""
        (self.dir(State.QUEUED) / self.WAKE).touch()

    # -- processing ---------------------------------------------------------

    def queued_names(self) -> list[str]:
        """Entries of ``queue/``, highest priority first, then submission order."""
        try:
            names = os.listdir(self.dir(State.QUEUED))
            return sorted((n for n in names if not n.startswith(".") and n != self.WAKE), key=queue_order)
        except FileNotFoundError:
            return []

    def claim(self, queued_name: str, claimer: str, source: State = State.QUEUED) -> Claim | None:
        """Try to take one entry of ``source``; None if another processor won it."""
        stem = queued_name[:-5] if queued_name.endswith(".json") else queued_name
        stem = stem.split(".p", 1)[0] if ID_RE.match(stem) else stem
        src = self.dir(source) / queued_name
        dst = self.dir(State.RUNNING) / f"{stem}@{claimer}.json"
        try:
            os.rename(src, dst)
        except OSError as e:
            # Over NFS a retransmitted rename can fail although the first
            # attempt succeeded: only the presence of our own name decides.
            if e.errno not in (errno.ENOENT, errno.ESTALE, errno.EEXIST):
                raise
        try:
            with open(dst, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        fsutil.fsync_dir(dst.parent)
        return Claim(id=stem, path=dst, queued_name=queued_name, data=data)

    def claim_next(self, claimer: str) -> Claim | None:
        """Claim the oldest queued entry, or None when the queue is empty."""
        while True:
            names = self.queued_names()
            if not names:
                return None
            for name in names:
                claim = self.claim(name, claimer)
                if claim is not None:
                    return claim

    def finish(self, claim: Claim, record: dict[str, Any], state: State) -> Path:
        """Publish the finished record of a claim and release the claim."""
        assert state.is_final
        final = self.dir(state) / f"{record['id']}.json"
        fsutil.write_durably(self.tmp_dir, final, dump(record))
        other = self.dir(State.DONE if state is State.FAILED else State.FAILED) / final.name
        if other.exists():  # an earlier run of a job that was retried
            other.unlink()
        self.release(claim)
        return final

    def finish_unrun(self, claim: Claim, job: Job, result: dict[str, Any]) -> Path:
        """Record a claimed job as failed without running it (``result`` says why)."""
        record = dict(job.to_json(), result=result, state=State.FAILED.label)
        record["attempts"] = [*job.attempts, result]
        return self.finish(claim, record, State.FAILED)

    def release(self, claim: Claim) -> None:
        os.unlink(claim.path)
        fsutil.fsync_dir(claim.path.parent)
        (self.cancel_dir / claim.id).unlink(missing_ok=True)

    def postpone(self, claim: Claim, job: Job) -> None:
        """Put a claimed job in ``delayed/`` (a retry waiting for its backoff)."""
        fsutil.write_durably(self.tmp_dir, self.dir(State.DELAYED) / f"{job.id}.json", job.to_bytes())
        self.release(claim)

    def reject(self, claim: Claim, reason: str) -> Path:
        """Move an unusable job file to ``failed/``, keeping its bytes."""
        record: dict[str, Any] = {}
        try:
            parsed = json.loads(claim.data)
            if isinstance(parsed, dict):
                record.update(parsed)
        except ValueError:
            pass
        record_id = claim.id if ID_RE.fullmatch(claim.id) else new_id()
        record.update(
            miniq=record.get("miniq", SCHEMA),
            id=record_id,
            state=State.FAILED.label,
            queued_as=claim.queued_name,
            original=claim.data.decode("utf-8", "backslashreplace"),
            result=not_started(reason, Outcome.REJECTED),
        )
        return self.finish(claim, record, State.FAILED)

    def requeue(self, running: Path, note: dict[str, Any]) -> str:
        """Put a claimed job back in the queue, recording why in ``attempts``."""
        data = json.loads(running.read_bytes())
        data.setdefault("attempts", []).append(note)
        job_id = data["id"]
        priority = (data.get("schedule") or {}).get("priority", 0)
        name = f"{job_id}.p{priority}.json" if priority else f"{job_id}.json"
        fsutil.write_durably(self.tmp_dir, self.dir(State.QUEUED) / name, dump(data))
        os.unlink(running)
        fsutil.fsync_dir(running.parent)
        return str(job_id)

    def stale_claims(self) -> Iterator[tuple[str, Path]]:
        """Claims of this host whose processor is gone: (job id, running file)."""
        host = claim_host()
        try:
            names = os.listdir(self.dir(State.RUNNING))
        except FileNotFoundError:
            return
        for name in sorted(names):
            parts = name[:-5].rsplit("@", 2) if name.endswith(".json") else []
            if len(parts) != 3 or parts[1] != host:
                continue
            job_id, _, owner = parts
            pid, _, start = owner.partition(".")
            if pid.isdigit() and process_start_time(int(pid)) == start:
                continue  # its processor is alive
            yield job_id, self.dir(State.RUNNING) / name

    def recover(self, before_requeue: Callable[[str], None] = lambda job_id: None) -> list[str]:
        """Apply the dead-processor policy to this host's stale claims."""
        recovered = []
        for job_id, path in self.stale_claims():
            if any((self.dir(s) / f"{job_id}.json").exists() for s in (State.DONE, State.FAILED, State.QUEUED)):
                path.unlink(missing_ok=True)  # finished or requeued already; a leftover
                continue
            before_requeue(job_id)
            try:
                self.requeue(path, {"outcome": Outcome.INTERRUPTED.value, "claim": path.name, "detected": now_iso()})
            except (ValueError, KeyError):
                claim = Claim(job_id, path, path.name, path.read_bytes())
                self.reject(claim, "claimed by a processor that died, and the file is unreadable")
            recovered.append(job_id)
        return recovered

    # -- looking up ---------------------------------------------------------

    def find(self, job_id: str) -> tuple[State, Path]:
        """The state and file of a job by id; ``UnknownJob`` if absent."""
        for state in (State.DONE, State.FAILED, State.DELAYED):
            path = self.dir(state) / f"{job_id}.json"
            if path.exists():
                return state, path
        for state, pattern in ((State.QUEUED, f"{job_id}.*json"), (State.RUNNING, f"{job_id}@*")):
            for path in self.dir(state).glob(pattern):
                return state, path
        raise UnknownJob(f"no job with id '{job_id}' under {self.root}")

    def record(self, job_id: str) -> dict[str, Any]:
        """The stored JSON of a job, with its current ``state`` filled in."""
        state, path = self.find(job_id)
        data: dict[str, Any] = json.loads(path.read_bytes())
        data["state"] = state.label
        return data

    def records(self, states: tuple[State, ...] = tuple(State)) -> Iterator[dict[str, Any]]:
        """Every job in ``states``, as stored, with ``state`` filled in."""
        for state in states:
            try:
                names = os.listdir(self.dir(state))
            except FileNotFoundError:
                continue
            for name in names:
                if name.startswith("."):
                    continue
                try:
                    data = json.loads((self.dir(state) / name).read_bytes())
                except (OSError, ValueError):
                    continue  # gone meanwhile, or not ours to show
                if isinstance(data, dict) and "id" in data:
                    data["state"] = state.label
                    yield data

    # -- scheduling -----------------------------------------------------------

    def promote(self, claimer: str, now: float | None = None) -> float | None:
        """Move delayed jobs that may run now into ``queue/``.

        A job whose dependency failed (or vanished) is recorded as not run.
        Returns the earliest time a still-delayed job becomes due, if any.
        """
        now = time.time() if now is None else now
        earliest: float | None = None
        try:
            names = sorted(os.listdir(self.dir(State.DELAYED)))
        except FileNotFoundError:
            return None
        for name in names:
            path = self.dir(State.DELAYED) / name
            try:
                job = Job.from_json(json.loads(path.read_bytes()))
            except FileNotFoundError:
                continue
            except ValueError as e:
                claim = self.claim(name, claimer, State.DELAYED)
                if claim:
                    self.reject(claim, f"unusable job file: {e}")
                continue
            blocked, failed_dep = self._dependencies(job)
            if failed_dep:
                claim = self.claim(name, claimer, State.DELAYED)
                if claim:
                    self.finish_unrun(claim, job, not_started(failed_dep))
                continue
            if blocked:
                continue
            due = job.schedule.not_before
            if due is not None and due > now:
                earliest = due if earliest is None else min(earliest, due)
                continue
            try:
                fsutil.move_durably(path, self.dir(State.QUEUED) / job.queue_name)
            except FileNotFoundError:
                pass  # another processor promoted it
        return earliest

    def _dependencies(self, job: Job) -> tuple[bool, str | None]:
        """(still waiting, reason it can never run) for a job's ``after`` list."""
        blocked = False
        for dep in job.schedule.after:
            try:
                state, _ = self.find(dep)
            except UnknownJob:
                return False, f"job {dep} it runs after no longer exists"
            if state is State.FAILED:
                return False, f"job {dep} it runs after did not succeed"
            if state is not State.DONE:
                blocked = True
        return blocked, None

    # -- operating ------------------------------------------------------------

    def cancel(self, job_id: str, claimer: str) -> State:
        """Cancel a job; returns the state it was in.

        A queued or delayed job is recorded as cancelled at once and never runs.
        For a running job a request is left in ``cancel/``: its processor stops
        the job's scope and records it as cancelled (see processor.py).
        """
        while True:
            state, path = self.find(job_id)
            if state.is_final:
                raise BadInput(f"job {job_id} has already finished ({state.label}); nothing to cancel")
            if state is State.RUNNING:
                self.ensure_layout()
                fsutil.write_durably(self.tmp_dir, self.cancel_dir / job_id, now_iso().encode())
                return state
            claim = self.claim(path.name, claimer, state)
            if claim is None:
                continue  # it moved meanwhile (claimed or promoted): look again
            job = Job.from_json(json.loads(claim.data))
            self.finish_unrun(claim, job, not_started(f"cancelled while {state.label}", Outcome.CANCELLED))
            return state

    def cancel_requested(self, job_id: str) -> bool:
        return (self.cancel_dir / job_id).exists()

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again, with the same id and arguments."""
        state, path = self.find(job_id)
        if state is not State.FAILED:
            raise BadInput(f"job {job_id} is {state.label}: only failed or cancelled jobs can be retried")
        data = json.loads(path.read_bytes())
        try:
            job = Job.from_json(data)
        except ValueError as e:
            raise BadInput(f"job {job_id} cannot be retried: its file is unusable ({e})") from None
        job = Job(
            job.id,
            job.name,
            job.argv,
            job.submitted,
            job.submitter,
            job.limits,
            Schedule(job.schedule.priority, None, (), job.schedule.retries),
            job.attempts,
            job.extra,
        )
        fsutil.write_durably(self.tmp_dir, self.dir(State.QUEUED) / job.queue_name, job.to_bytes())
        path.unlink()
        fsutil.fsync_dir(path.parent)
        return job

    def purge(self, older_than: float, dry_run: bool = False, now: float | None = None) -> list[str]:
        """Remove finished records that ended more than ``older_than`` seconds ago."""
        cutoff = (time.time() if now is None else now) - older_than
        removed = []
        for state in (State.DONE, State.FAILED):
            for path in sorted(self.dir(state).glob("*.json")):
                try:
                    data = json.loads(path.read_bytes())
                    ended = datetime.fromisoformat(data["result"]["ended"]).timestamp()
                except (OSError, ValueError, KeyError, TypeError):
                    ended = path.stat().st_mtime
                if ended < cutoff:
                    if not dry_run:
                        path.unlink()
                    removed.append(path.stem)
        return removed
