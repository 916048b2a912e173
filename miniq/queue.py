"""The queue on disk.  The directory a file sits in is its state.

Layout of a root::

    jobs/NAME.job     job types: executables, run as ``NAME.job ARGS...``
    queue/ID.json     queued, waiting to run (the path unit watches this)
    running/ID@HOST@PID.START.json
                      claimed by the processor with that host, PID and
                      process start time
    done/ID.json      finished with exit code 0
    failed/ID.json    finished otherwise, or rejected (with the reason)
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import fsutil
from .errors import BadInput, MiniqError, UnknownJob
from .job import ID_RE, SCHEMA, Job, State, check_name, dump, hostname, new_id, now_iso
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


def claimer_id() -> str:
    """This process's claim suffix: unique among all live processes of all hosts."""
    host = hostname().replace("@", "_").replace("/", "_")
    return f"{host}@{os.getpid()}.{process_start_time(os.getpid())}"


@dataclass(frozen=True)
class Claim:
    """A job file this processor owns, now in ``running/``."""

    id: str
    path: Path
    queued_name: str
    data: bytes


class Queue:
    """A miniq root directory and the operations on it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.tmp_dir = self.root / "tmp"

    def dir(self, state: State) -> Path:
        return self.root / state.dirname

    # -- setting up ---------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create the root and its state directories if missing."""
        try:
            for d in (self.root, self.jobs_dir, self.tmp_dir, *(self.dir(s) for s in State)):
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

    def enqueue(self, name: str, argv: list[str] | tuple[str, ...], limits: Limits = Limits()) -> Job:
        """Validate and atomically publish a new job; returns it with its id."""
        self.job_type(name)
        job = Job.new(name, argv, limits)
        self.ensure_layout()
        try:
            fsutil.write_durably(self.tmp_dir, self.dir(State.QUEUED) / f"{job.id}.json", job.to_bytes())
        except OSError as e:
            raise MiniqError(f"cannot write to the queue {self.dir(State.QUEUED)}: {e.strerror}") from None
        return job

    # -- processing ---------------------------------------------------------

    def queued_names(self) -> list[str]:
        """Entries of ``queue/`` in submission order (job ids sort by time)."""
        try:
            return sorted(n for n in os.listdir(self.dir(State.QUEUED)) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def claim(self, queued_name: str, claimer: str) -> Claim | None:
        """Try to take one queued entry; None if another processor won it."""
        stem = queued_name[:-5] if queued_name.endswith(".json") else queued_name
        src = self.dir(State.QUEUED) / queued_name
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
        os.unlink(claim.path)
        fsutil.fsync_dir(claim.path.parent)
        return final

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
            result={"outcome": "rejected", "reason": reason, "host": hostname(), "ended": now_iso()},
        )
        return self.finish(claim, record, State.FAILED)

    def requeue(self, running: Path, note: dict[str, Any]) -> str:
        """Put a claimed job back in the queue, recording why in ``attempts``."""
        data = json.loads(running.read_bytes())
        data.setdefault("attempts", []).append(note)
        job_id = data["id"]
        fsutil.write_durably(self.tmp_dir, self.dir(State.QUEUED) / f"{job_id}.json", dump(data))
        os.unlink(running)
        fsutil.fsync_dir(running.parent)
        return str(job_id)

    def stale_claims(self) -> Iterator[tuple[str, Path]]:
        """Claims of this host whose processor is gone: (job id, running file)."""
        host = hostname().replace("@", "_").replace("/", "_")
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
                self.requeue(path, {"outcome": "interrupted", "claim": path.name, "detected": now_iso()})
            except (ValueError, KeyError):
                claim = Claim(job_id, path, path.name, path.read_bytes())
                self.reject(claim, "claimed by a processor that died, and the file is unreadable")
            recovered.append(job_id)
        return recovered

    # -- looking up ---------------------------------------------------------

    def find(self, job_id: str) -> tuple[State, Path]:
        """The state and file of a job by id; ``UnknownJob`` if absent."""
        for state in (State.DONE, State.FAILED, State.QUEUED):
            path = self.dir(state) / f"{job_id}.json"
            if path.exists():
                return state, path
        try:
            for name in os.listdir(self.dir(State.RUNNING)):
                if name.startswith(job_id + "@"):
                    return State.RUNNING, self.dir(State.RUNNING) / name
        except FileNotFoundError:
            pass
        raise UnknownJob(f"no job with id '{job_id}' under {self.root}")

    def record(self, job_id: str) -> dict[str, Any]:
        """The stored JSON of a job, with its current ``state`` filled in."""
        state, path = self.find(job_id)
        data: dict[str, Any] = json.loads(path.read_bytes())
        data["state"] = state.label
        return data
