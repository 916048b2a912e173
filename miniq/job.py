"""What a job is: its id, its file format and the states it passes through.

A job file is UTF-8 JSON.  Its ``miniq`` key is the schema version: readers
accept every file whose version they know and keep unknown keys untouched, so
later releases can add fields without breaking older files.  Incompatible
changes bump ``SCHEMA``.

Job ids are ``YYYYMMDD-HHMMSS-uuuuuu-rrrrrrrr``: UTC submission time to the
microsecond, then 32 random bits.  They sort in submission order as plain
strings, and the random part keeps them unique across machines sharing one
root.
"""

from __future__ import annotations

import enum
import json
import os
import pwd
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .errors import BadInput
from .limits import Limits

SCHEMA = 1

ID_RE = re.compile(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{8}")
# A job name becomes a file name (jobs/NAME.job) and part of journal fields:
# no slashes, no leading dot (so no "." or ".."), no control characters.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,127}")


class State(enum.Enum):
    """Where a job is; each state is a directory under the root."""

    QUEUED = "queue"
    DELAYED = "delayed"  # waiting for its time, its retry backoff or a dependency
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def dirname(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in (State.DONE, State.FAILED)

    @property
    def label(self) -> str:
        return self.name.lower()


class Outcome(enum.Enum):
    """How a job ended; stored in the ``result`` of a finished record."""

    EXITED = "exited"  # the job's process exited on its own; see exit_code
    SIGNALED = "signaled"  # killed by a signal nobody in miniq sent
    OOM = "oom"  # killed by the kernel for exceeding MemoryMax
    TIMEOUT = "timeout"  # stopped by systemd after its time limit
    NOT_STARTED = "not-started"  # could not be started (see reason)
    REJECTED = "rejected"  # the job file itself was unusable (see reason)
    ERROR = "error"  # miniq itself failed while handling the job (see reason)
    CANCELLED = "cancelled"  # stopped or dropped by `miniq cancel`
    INTERRUPTED = "interrupted"  # its processor died; the job was queued again (attempts only)

    def succeeded(self, exit_code: int | None) -> bool:
        return self is Outcome.EXITED and exit_code == 0


def new_id(now: datetime | None = None) -> str:
    """A fresh job id; see the module comment for its shape."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%d-%H%M%S-%f-") + os.urandom(4).hex()


def check_name(name: str) -> str:
    """Return ``name`` if it can name a job type, else raise ``BadInput``."""
    if not NAME_RE.fullmatch(name):
        shown = name.encode("unicode_escape", "backslashreplace").decode("ascii")
        raise BadInput(
            f"invalid job name '{shown}': expected letters, digits and '_.+@-', "
            "not starting with a dot, at most 128 characters (no '/', '..' or control characters)"
        )
    return name


def hostname() -> str:
    return os.uname().nodename


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def not_started(reason: str, outcome: Outcome = Outcome.NOT_STARTED) -> dict[str, Any]:
    """The ``result`` of a job that did not run: not started, rejected, cancelled..."""
    return {"outcome": outcome.value, "reason": reason, "host": hostname(), "ended": now_iso()}


MAX_BACKOFF = 3600.0


def backoff(failed_attempts: int) -> float:
    """Seconds before the next retry: 1, 2, 4, ... doubling, at most an hour."""
    return float(min(2 ** max(failed_attempts - 1, 0), MAX_BACKOFF))


@dataclass(frozen=True)
class Schedule:
    """When a job may run: priority, earliest time, dependencies, retries."""

    priority: int = 0  # higher runs first; submission order within a priority
    not_before: float | None = None  # Unix time
    after: tuple[str, ...] = ()  # ids that must have succeeded first
    retries: int = 0  # further attempts after a failure

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.priority:
            data["priority"] = self.priority
        if self.not_before is not None:
            data["not_before"] = datetime.fromtimestamp(self.not_before, timezone.utc).isoformat(timespec="milliseconds")
        if self.after:
            data["after"] = list(self.after)
        if self.retries:
            data["retries"] = self.retries
        return data

    @classmethod
    def from_json(cls, data: Any) -> Schedule:
        if not isinstance(data, dict):
            raise ValueError("field 'schedule' must be an object")
        not_before = data.get("not_before")
        after = data.get("after", [])
        if not isinstance(after, list) or not all(isinstance(a, str) and ID_RE.fullmatch(a) for a in after):
            raise ValueError("field 'schedule.after' must be a list of job ids")
        return cls(
            priority=int(data.get("priority", 0)),
            not_before=datetime.fromisoformat(not_before).timestamp() if not_before else None,
            after=tuple(after),
            retries=int(data.get("retries", 0)),
        )


@dataclass(frozen=True)
class Job:
    """One queued unit of work: run ``jobs/NAME.job ARGV...``."""

    id: str
    name: str
    argv: tuple[str, ...]
    submitted: str
    submitter: dict[str, Any]
    limits: Limits = Limits()
    schedule: Schedule = Schedule()
    #: Every finished run so far, oldest first (each a ``result`` object).
    attempts: tuple[dict[str, Any], ...] = ()
    #: Keys this version does not know, kept so that rewriting loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, name: str, argv: list[str] | tuple[str, ...], limits: Limits = Limits(), schedule: Schedule = Schedule()) -> Job:
        uid = os.getuid()
        return cls(
            id=new_id(),
            name=check_name(name),
            argv=tuple(argv),
            submitted=now_iso(),
            submitter={"uid": uid, "user": _user_name(uid), "host": hostname(), "pid": os.getpid()},
            limits=limits,
            schedule=schedule,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            miniq=SCHEMA,
            id=self.id,
            name=self.name,
            argv=list(self.argv),
            submitted=self.submitted,
            submitter=self.submitter,
        )
        if not self.limits.is_empty():
            data["limits"] = self.limits.to_json()
        if self.schedule.to_json():
            data["schedule"] = self.schedule.to_json()
        if self.attempts:
            data["attempts"] = list(self.attempts)
        return data

    def to_bytes(self) -> bytes:
        return dump(self.to_json())

    @classmethod
    def from_json(cls, data: Any) -> Job:
        """Read a job; raise ``ValueError`` naming what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("the job file is not a JSON object")
        version = data.get("miniq")
        if version != SCHEMA:
            raise ValueError(f"unsupported schema version {version!r} (this miniq reads version {SCHEMA})")
        for key, kind in (("id", str), ("name", str), ("argv", list), ("submitted", str), ("submitter", dict)):
            if not isinstance(data.get(key), kind):
                raise ValueError(f"field {key!r} is missing or not a {kind.__name__}")
        if not ID_RE.fullmatch(data["id"]):
            raise ValueError(f"invalid job id {data['id']!r}")
        if not NAME_RE.fullmatch(data["name"]):
            raise ValueError(f"invalid job name {data['name']!r}")
        if not all(isinstance(a, str) for a in data["argv"]):
            raise ValueError("field 'argv' must be a list of strings")
        attempts = data.get("attempts", [])
        if not isinstance(attempts, list) or not all(isinstance(a, dict) for a in attempts):
            raise ValueError("field 'attempts' must be a list of objects")
        known = {"miniq", "id", "name", "argv", "submitted", "submitter", "limits", "schedule", "attempts", "state", "result"}
        return cls(
            id=data["id"],
            name=data["name"],
            argv=tuple(data["argv"]),
            submitted=data["submitted"],
            submitter=data["submitter"],
            limits=Limits.from_json(data.get("limits", {})),
            schedule=Schedule.from_json(data.get("schedule", {})),
            attempts=tuple(attempts),
            extra={k: v for k, v in data.items() if k not in known},
        )

    @property
    def queue_name(self) -> str:
        """Its file name in ``queue/``: the priority rides in the name, so
        processors order the queue without opening every file."""
        p = self.schedule.priority
        return f"{self.id}.json" if p == 0 else f"{self.id}.p{p}.json"

    def argv_bytes(self) -> list[bytes]:
        """The arguments as the bytes the submitter gave (non-UTF-8 survives)."""
        return [os.fsencode(a) for a in self.argv]


def parse_at(text: str, now: datetime | None = None) -> float:
    """Parse ``--at``: an ISO date and time (local unless it has an offset),
    or ``HH:MM[:SS]`` meaning the next such time.  Returns Unix time."""
    from .errors import BadInput

    now = now or datetime.now().astimezone()
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text.strip()):
            parts = [int(p) for p in text.strip().split(":")]
            at = now.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0, microsecond=0)
            if at <= now:
                at = at.fromtimestamp(at.timestamp() + 86400, at.tzinfo)
            return at.timestamp()
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"invalid time {text!r} for --at: expected e.g. 2026-12-24T18:00, '2026-12-24 18:00' or 18:00") from None
    if at.tzinfo is None:
        at = at.astimezone()
    return at.timestamp()


def queue_order(name: str) -> tuple[int, str]:
    """Sort key of a ``queue/`` entry: higher priority first, then submission."""
    stem = name[:-5] if name.endswith(".json") else name
    job_id, _, prio = stem.partition(".p")
    try:
        return (-int(prio or 0), job_id)
    except ValueError:
        return (0, stem)


def dump(data: dict[str, Any]) -> bytes:
    # ensure_ascii keeps undecodable arguments (lone surrogates from
    # os.fsdecode) representable, so a job's argv round-trips byte for byte.
    return (json.dumps(data, ensure_ascii=True, indent=1) + "\n").encode("ascii")
