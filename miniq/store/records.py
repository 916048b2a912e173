"""A job as found on disk, in any state, for people to look at.

``Record`` is what ``miniq list``, ``show`` and ``wait`` read: the stored JSON,
the job and result parsed from it where they are usable, and for a running
job who holds it and how fresh its lease is.  Reading trusts nothing
(files.py): a broken file is shown as such, never followed, never fatal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import files
from ..core.files import Unusable, read_untrusted
from ..core.job import Job, State
from ..core.result import Result
from .layout import Layout, parse_claim_name

if TYPE_CHECKING:
    from .clock import ServerClock


@dataclass(frozen=True)
class Lease:
    """Who runs a job and whether its lease still holds."""

    host: str
    age: float | None  # seconds since the last renewal, by the file server's clock
    expired: bool


@dataclass(frozen=True)
class Record:
    state: State
    id: str
    path: Path
    owner: int
    data: dict[str, Any]
    job: Job | None = None
    result: Result | None = None
    problem: str | None = None
    lease: Lease | None = None

    @property
    def name(self) -> str | None:
        if self.job:
            return self.job.name
        name = self.data.get("name")
        return name if isinstance(name, str) else None

    @property
    def held(self) -> bool:
        """Held because its job type is paused or at its cap (pause.py, slots.py)."""
        return self.state is State.DELAYED and self.path.name.startswith("held-")

    @property
    def finished(self) -> bool:
        return self.state.is_final

    def shown(self) -> dict[str, Any]:
        """The stored record with its current state filled in (``show --json``)."""
        return dict(self.data, state=self.state.label)


def read(path: Path, state: State, job_id: str, clock: ServerClock | None = None, lease: float = 60.0) -> Record:
    """Read one record; ``FileNotFoundError`` if it is gone meanwhile."""
    # A claim is opened for writing where we may: over NFSv4.0 that takes no
    # delegation, which would stall its holder's renewals if we died; over
    # NFSv4.1+ it still may (files.py; README, "Several machines").
    claim = state is State.RUNNING and os.access(path, os.W_OK)
    try:
        data, st = read_untrusted(path, single_link=not state.is_final, claim=claim)
        raw = files.load_json(data)
        if not isinstance(raw, dict):
            raise Unusable("it is not a JSON object")
    except Unusable as e:
        st = os.lstat(path)
        return Record(state, job_id, path, st.st_uid, {"id": job_id}, problem=e.reason)
    job = result = None
    problem = None
    try:
        job = Job.from_json(raw)
    except ValueError as e:
        problem = str(e)
    try:
        result = Result.from_json(raw["result"]) if "result" in raw else None
    except ValueError as e:
        problem = problem or str(e)
    holder = None
    if state is State.RUNNING:
        holder = _lease(path, clock, lease)
    return Record(state, job_id, path, st.st_uid, raw, job, result, problem, holder)


def _lease(path: Path, clock: ServerClock | None, lease: float) -> Lease | None:
    from ..core.proc import Claimer

    parsed = parse_claim_name(path.name)
    if parsed is None:
        return None
    claimer = Claimer.parse(parsed[1])
    host = claimer.host if claimer else "?"
    seconds = clock.age(path) if clock else None
    return Lease(host, seconds, seconds is not None and seconds > lease)


def server_clock(layout: Layout) -> ServerClock | None:
    """A clock for lease ages, if this caller may write ``tmp/``."""
    from .clock import ServerClock

    if os.access(layout.tmp, os.W_OK):
        return ServerClock(layout)
    return None
