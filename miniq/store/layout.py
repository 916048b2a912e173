"""Every file name of a queue root, built and parsed in this one place.

Layout of a root::

    jobs/NAME.job            job types: executables, run as ``NAME.job ARGS...``
    queue/PPPP-ID.json       queued; PPPP is 1000 minus the priority, four
                             digits, so names sort in the order jobs run
    queue/wake               dropped to start the processor without a job
    delayed/TTTTTTTTTTTTT-ID.json
                             waiting until Unix time T (milliseconds, 13 digits)
    delayed/after-ID.json    waiting for the jobs it runs after
    delayed/held-ID.json     held: its job type is paused, or at its cap of
                             jobs running at once (pause.py, slots.py)
    running/ID@CLAIMER.json  claimed by the processor CLAIMER (claims.py)
    running/ID@CLAIMER.done  its run ended; the record is being published
    done/ID.json             finished with exit code 0
    failed/ID.json           finished otherwise, not run, or rejected
    cancel/ID                a request to cancel job ID
    paused/@all, paused/NAME pauses of the whole queue or of job type NAME (pause.py)
    slots/N-NAME/K[@CLAIM]   the N slots of job type NAME, free or held (slots.py)
    unique/KEY               the job holding an --unique key (unique.py)
    priorities/PPPP          marks that some job was queued with that priority,
                             so a job is found by exact names, never by a scan
    rejected/                entries the processor could not use, kept for inspection
    tmp/                     staging for atomic writes (same file system)
    miniq.conf               optional configuration (config.py); the system
                             queue's is /etc/miniq/miniq.conf (``config_path``)

Names that do not match this grammar are never trusted: the processor reads
them as untrusted files and rejects what is not a job.  Names of 0.1.0
(``queue/ID.json``, ``ID.pN.json``, ``delayed/ID.json``) are still read.
"""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path

from ..core.job import State
from ..core.schedule import ID_RE, MAX_PRIORITY

WAKE = "wake"
#: The "due time" of a held entry (``delayed/held-ID.json``): never by time alone.
HELD = math.inf
_ID = r"\d{8}-\d{6}-\d{6}-[0-9a-f]{8}"
_QUEUE_RE = re.compile(rf"(\d{{4}})-({_ID})\.json")
_LEGACY_QUEUE_RE = re.compile(rf"({_ID})(?:\.p(-?\d{{1,4}}))?\.json")
_DELAYED_RE = re.compile(rf"(\d{{13}}|after|held)-({_ID})\.json")
_LEGACY_DELAYED_RE = re.compile(rf"({_ID})\.json")
_CLAIM_RE = re.compile(rf"({_ID})@([A-Za-z0-9_.+-]{{1,200}})\.(json|done)")
# A job id followed by anything: recognises a 0.1.0 claim (ID@HOST@PID.START.json).
_ANY_CLAIM_RE = re.compile(rf"({_ID})@.{{1,220}}")


def queue_name(priority: int, job_id: str) -> str:
    return f"{MAX_PRIORITY - priority:04d}-{job_id}.json"


def parse_queue_name(name: str) -> tuple[int, str] | None:
    """(priority, id) of a ``queue/`` entry, or None if the name is not one of ours."""
    m = _QUEUE_RE.fullmatch(name)
    if m:
        return MAX_PRIORITY - int(m.group(1)), m.group(2)
    m = _LEGACY_QUEUE_RE.fullmatch(name)
    if m:
        return int(m.group(2) or 0), m.group(1)
    return None


def queue_sort_key(name: str) -> str:
    """Run order of a ``queue/`` name: ours sort as they are; others first by id."""
    if _QUEUE_RE.fullmatch(name):
        return name
    parsed = parse_queue_name(name)
    return queue_name(*parsed) if parsed else "0000-" + name


def delayed_name(job_id: str, due: float | None) -> str:
    """``due`` is the Unix time it may run; None means it waits for
    dependencies, ``HELD`` for its job type (paused, or at its cap)."""
    if due is None:
        return f"after-{job_id}.json"
    if due == HELD:
        return f"held-{job_id}.json"
    return f"{min(max(int(due * 1000), 0), 10**13 - 1):013d}-{job_id}.json"  # Schedule checks the range (MAX_DUE)


def parse_delayed_name(name: str) -> tuple[float | None, str] | None:
    """(due time, None for dependencies or ``HELD``; id), or None if the name is not ours."""
    m = _DELAYED_RE.fullmatch(name)
    if m:
        kind = m.group(1)
        return (None if kind == "after" else HELD if kind == "held" else int(kind) / 1000), m.group(2)
    return None


def claim_name(job_id: str, claimer: str, finishing: bool = False) -> str:
    return f"{job_id}@{claimer}.{'done' if finishing else 'json'}"


def parse_claim_name(name: str) -> tuple[str, str | None, bool] | None:
    """(id, claimer, finishing) of a ``running/`` entry; the claimer is None
    when the name is a claim whose owner miniq cannot parse (0.1.0)."""
    m = _CLAIM_RE.fullmatch(name)
    if m:
        return m.group(1), m.group(2), m.group(3) == "done"
    m = _ANY_CLAIM_RE.fullmatch(name)
    if m:
        return m.group(1), None, False
    return None


def is_id(text: str) -> bool:
    return bool(ID_RE.fullmatch(text))


#: The system queue's configuration, where Debian keeps configuration.
SYSTEM_CONFIG = Path("/etc/miniq/miniq.conf")


def config_path(root: Path) -> Path:
    """Where the configuration of queue ``root`` is: ``ROOT/miniq.conf``, but
    for the system queue ``/etc/miniq/miniq.conf``, or its place before 0.3
    (``/var/lib/miniq/miniq.conf``) until it is moved (the package moves it;
    doctor says so)."""
    from ..core.manager import SYSTEM_ROOT

    own = root / "miniq.conf"
    if root != SYSTEM_ROOT or os.path.lexists(SYSTEM_CONFIG) or not os.path.lexists(own):
        return SYSTEM_CONFIG if root == SYSTEM_ROOT else own
    return own


class Layout:
    """The directories of one root and the paths of its files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs = self.root / "jobs"
        self.tmp = self.root / "tmp"
        self.cancel = self.root / "cancel"
        self.priorities = self.root / "priorities"
        self.rejected = self.root / "rejected"
        self.paused = self.root / "paused"
        self.slots = self.root / "slots"
        self.unique = self.root / "unique"
        self.conf = config_path(self.root)

    def dir(self, state: State) -> Path:
        return self.root / state.dirname

    @functools.cached_property
    def on_nfs(self) -> bool:
        from ..core.files import on_nfs

        return on_nfs(self.root)

    @property
    def queue(self) -> Path:
        return self.root / State.QUEUED.dirname

    @property
    def delayed(self) -> Path:
        return self.root / State.DELAYED.dirname

    @property
    def running(self) -> Path:
        return self.root / State.RUNNING.dirname

    @property
    def wake(self) -> Path:
        return self.queue / WAKE

    def all_dirs(self) -> list[Path]:
        return [
            self.root, self.jobs, self.tmp, self.cancel, self.priorities, self.rejected, self.paused, self.slots, self.unique,
            *(self.dir(s) for s in State),
        ]  # fmt: skip

    def job_type(self, name: str) -> Path:
        return self.jobs / f"{name}.job"

    def record(self, state: State, job_id: str) -> Path:
        assert state.is_final and is_id(job_id)
        return self.dir(state) / f"{job_id}.json"

    def queued(self, priority: int, job_id: str) -> Path:
        return self.queue / queue_name(priority, job_id)

    def delayed_entry(self, job_id: str, due: float | None) -> Path:
        return self.delayed / delayed_name(job_id, due)

    def claim(self, job_id: str, claimer: str, finishing: bool = False) -> Path:
        return self.running / claim_name(job_id, claimer, finishing)

    def cancel_request(self, job_id: str) -> Path:
        assert is_id(job_id)
        return self.cancel / job_id

    def priority_marker(self, priority: int) -> Path:
        return self.priorities / f"{MAX_PRIORITY - priority:04d}"

    def clock_probe(self, claimer: str) -> Path:
        return self.tmp / f"clock@{claimer}"

    # -- finding a job by exact names ----------------------------------------

    def priorities_in_use(self) -> list[int]:
        try:
            names = os.listdir(self.priorities)
        except OSError:
            return []
        return [MAX_PRIORITY - int(n) for n in names if n.isdigit() and len(n) == 4]

    def candidates(self, job_id: str) -> list[tuple[State, Path]]:
        """Where job ``job_id`` can be, cheapest first; each to be checked."""
        assert is_id(job_id)
        found: list[tuple[State, Path]] = [
            (State.DONE, self.record(State.DONE, job_id)),
            (State.FAILED, self.record(State.FAILED, job_id)),
            (State.QUEUED, self.queued(0, job_id)),
            (State.QUEUED, self.queue / f"{job_id}.json"),
            (State.DELAYED, self.delayed_entry(job_id, None)),
            (State.DELAYED, self.delayed_entry(job_id, HELD)),
        ]
        found += [(State.QUEUED, self.queued(p, job_id)) for p in self.priorities_in_use() if p != 0]
        return found

    def scan(self, state: State, job_id: str) -> Path | None:
        """Find an entry of ``job_id`` in a directory whose names carry more
        than the id (running claims, due times).  Costs a listing of that
        directory: running/ holds one entry per running job; delayed/ one per
        delayed job."""
        try:
            with os.scandir(self.dir(state)) as it:
                for entry in it:
                    name = entry.name
                    if state is State.RUNNING and name.startswith(job_id + "@"):
                        return Path(entry.path)
                    if state is State.DELAYED and name.endswith(f"-{job_id}.json") and parse_delayed_name(name):
                        return Path(entry.path)
                    if state is State.DELAYED and name == f"{job_id}.json":
                        return Path(entry.path)
        except OSError:
            return None
        return None
