"""What a job is: its id, its file format and the states it passes through.

A job file is UTF-8 JSON.  Its ``miniq`` key is the schema version: readers
accept every file whose version they know and keep unknown keys untouched, so
later releases can add fields without breaking older files.  Incompatible
changes bump ``SCHEMA``.  Every field is checked with its type before use
(``Job.from_json``); a file that fails is rejected with the reason.

Job ids are ``YYYYMMDD-HHMMSS-uuuuuu-rrrrrrrr``: UTC submission time to the
microsecond, then 32 random bits.  They sort in submission order as plain
strings, and the random part keeps them unique across machines sharing one
root.  An id read from a file becomes part of a path only if it matches
this grammar.
"""

from __future__ import annotations

import enum
import functools
import os
import pwd
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import BadInput
from .limits import Limits
from .schedule import ID_RE, Schedule
from .timeparse import now_iso

if TYPE_CHECKING:
    from .result import Result

SCHEMA = 1
MAX_ARGS = 4096
#: The longest single argument the kernel passes to a program, with its NUL (linux/binfmts.h).
MAX_ARG_STRLEN = 32 * 4096
#: Room kept in ARG_MAX for the job's environment and executable path (spawn.py sets a few short variables).
ENV_RESERVE = 16 * 1024
#: ARG_MAX is never below this on Linux (glibc: a quarter of the stack limit, at least 128 KiB).
MIN_ARG_MAX = 128 * 1024
# A job name becomes a file name (jobs/NAME.job) and part of journal fields:
# no slashes, no leading dot (so no "." or ".."), no control characters.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,127}")
KNOWN_KEYS = frozenset({
    "miniq", "id", "name", "argv", "submitted", "submitter", "limits", "schedule", "attempts", "state", "result",
    "unique", "on_success", "on_failure", "follows",
})  # fmt: skip
MAX_UNIQUE = 1024  # characters of an --unique key

__all__ = ["ID_RE", "NAME_RE", "SCHEMA", "Follows", "Job", "State", "Submitter", "check_name", "new_id"]


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

    @classmethod
    def by_label(cls, label: str) -> State:
        return cls[label.upper()]


def new_id() -> str:
    """A fresh job id; see the module comment for its shape."""
    seconds, micro = divmod(time.time_ns() // 1000, 1_000_000)
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(seconds)) + f"-{micro:06d}-" + os.urandom(4).hex()


def check_name(name: str) -> str:
    """Return ``name`` if it can name a job type, else raise ``BadInput``."""
    if not NAME_RE.fullmatch(name):
        shown = name.encode("unicode_escape", "backslashreplace").decode("ascii")
        raise BadInput(
            f"invalid job name '{shown}': expected letters, digits and '_.+@-', "
            "not starting with a dot, at most 128 characters (no '/', '..' or control characters)"
        )
    return name


def arg_max() -> int:
    """The kernel's limit on arguments plus environment of one exec (ARG_MAX)."""
    try:
        return max(int(os.sysconf("SC_ARG_MAX")), MIN_ARG_MAX)
    except (ValueError, OSError):
        return 2 * 1024 * 1024


def check_argv(argv: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``argv`` if a program can receive it, else ``BadInput`` (nothing is written):
    no NUL bytes, no argument over the kernel's ``MAX_ARG_STRLEN`` (128 KiB),
    all of them with the job's environment within ``ARG_MAX``."""
    if len(argv) > MAX_ARGS:
        raise BadInput(f"too many arguments ({len(argv)}): at most {MAX_ARGS}")
    total = ENV_RESERVE
    for number, arg in enumerate(argv, 1):
        if "\0" in arg:
            raise BadInput("an argument contains a NUL byte, which no program can receive")
        try:
            size = len(os.fsencode(arg))
        except UnicodeEncodeError:  # a lone surrogate that stands for no byte (a request, not a command line)
            raise BadInput(f"argument {number} is not text a program can receive: it holds a lone UTF-16 surrogate") from None
        if size >= MAX_ARG_STRLEN:
            raise BadInput(
                f"argument {number} is {size} bytes: the kernel passes at most {MAX_ARG_STRLEN - 1} bytes in one argument, "
                "so the job could never start; pass large data in a file"
            )
        total += size + 1 + 8  # the string, its NUL and its pointer
    if total > MIN_ARG_MAX and total > arg_max():  # arg_max() asks the C library each time
        raise BadInput(
            f"the arguments take {total - ENV_RESERVE} bytes: with the job's environment that is over the kernel's limit "
            f"of {arg_max()} bytes for one program (ARG_MAX), so the job could never start; pass large data in a file"
        )
    return tuple(argv)


def hostname() -> str:
    return os.uname().nodename


@functools.lru_cache(maxsize=256)  # a listing names each job's owner
def user_name(uid: int) -> str:
    """The account name of ``uid``, or the number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class Submitter(NamedTuple):
    """Who queued the job, as the enqueuing process saw itself.

    Informational: where it matters (the system queue), the job runs as the
    owner of its file, which the kernel vouches for (README, "Shared servers").
    """

    uid: int
    user: str
    host: str
    pid: int

    @classmethod
    def current(cls, uid: int | None = None, pid: int | None = None) -> Submitter:
        uid = os.getuid() if uid is None else uid
        return cls(uid, user_name(uid), hostname(), os.getpid() if pid is None else pid)

    def to_json(self) -> dict[str, Any]:
        return {"uid": self.uid, "user": self.user, "host": self.host, "pid": self.pid}

    @classmethod
    def from_json(cls, data: Any) -> Submitter:
        if not isinstance(data, dict):
            raise ValueError("field 'submitter' must be an object")
        uid, pid = data.get("uid"), data.get("pid", 0)
        for key, value in (("uid", uid), ("pid", pid)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise ValueError(f"field 'submitter.{key}' must be a whole number, not {value!r}")
        user, host = data.get("user", ""), data.get("host", "")
        if not isinstance(user, str) or not isinstance(host, str) or len(user) > 256 or len(host) > 256:
            raise ValueError("fields 'submitter.user' and 'submitter.host' must be short strings")
        assert isinstance(uid, int) and isinstance(pid, int)
        return cls(uid, user, host, pid)


class Follows(NamedTuple):
    """What a follow-up job follows (``--on-failure``/``--on-success``): the
    finished job's id, type, outcome and the status ``miniq wait`` gives it."""

    id: str
    name: str
    outcome: str
    status: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "outcome": self.outcome, "status": self.status}

    @classmethod
    def from_json(cls, data: Any) -> Follows:
        if not isinstance(data, dict):
            raise ValueError("field 'follows' must be an object")
        job_id, name, outcome, status = data.get("id"), data.get("name"), data.get("outcome"), data.get("status")
        if not isinstance(job_id, str) or not ID_RE.fullmatch(job_id):
            raise ValueError("field 'follows.id' must be a job id")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or not isinstance(outcome, str) or len(outcome) > 64:
            raise ValueError("fields 'follows.name' and 'follows.outcome' must be a job name and a short string")
        if isinstance(status, bool) or not isinstance(status, int) or not 0 <= status <= 255:
            raise ValueError("field 'follows.status' must be a whole number from 0 to 255")
        return cls(job_id, name, outcome, status)


def _optional_name(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not NAME_RE.fullmatch(value)):
        raise ValueError(f"field {key!r} must be a job name")
    return value


def _field(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ValueError(f"field {key!r} is missing or not a {kind.__name__}")
    return value


class Job(NamedTuple):
    """One queued unit of work: run ``jobs/NAME.job ARGV...`` (a ``NamedTuple``,
    not a dataclass: see miniq/__init__.py)."""

    id: str
    name: str
    argv: tuple[str, ...]
    submitted: str
    submitter: Submitter
    limits: Limits = Limits()
    schedule: Schedule = Schedule()
    #: Every finished run so far, oldest first.
    attempts: tuple[Result, ...] = ()
    #: While queued, delayed or running, no other job with this key is added (unique.py).
    unique: str | None = None
    #: Job types queued when this job ends, after its retries (followup.py).
    on_success: str | None = None
    on_failure: str | None = None
    #: Set on a follow-up job: the job it follows.
    follows: Follows | None = None
    #: Keys this version does not know, kept so that rewriting loses nothing.
    extra: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def new(
        cls, name: str, argv: list[str] | tuple[str, ...], limits: Limits = Limits(), schedule: Schedule = Schedule(),
        uid: int | None = None, pid: int | None = None,
    ) -> Job:  # fmt: skip
        return cls(new_id(), check_name(name), check_argv(argv), now_iso(), Submitter.current(uid, pid), limits, schedule)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data.update(
            miniq=SCHEMA, id=self.id, name=self.name, argv=list(self.argv), submitted=self.submitted, submitter=self.submitter.to_json()
        )
        if not self.limits.is_empty():
            data["limits"] = self.limits.to_json()
        if self.schedule.to_json():
            data["schedule"] = self.schedule.to_json()
        if self.attempts:
            data["attempts"] = [a.to_json() for a in self.attempts]
        for key in ("unique", "on_success", "on_failure"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.follows is not None:
            data["follows"] = self.follows.to_json()
        return data

    def record(self, result: Result, state: State) -> dict[str, Any]:
        """The finished record of this job: its file plus ``state`` and ``result``."""
        return dict(self.to_json(), state=state.label, result=result.to_json())

    @classmethod
    def from_json(cls, data: Any) -> Job:
        """Read a job; raise ``ValueError`` naming what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("the job file is not a JSON object")
        version = data.get("miniq")
        if version != SCHEMA or isinstance(version, bool):
            raise ValueError(f"unsupported schema version {version!r} (this miniq reads version {SCHEMA})")
        job_id, name = _field(data, "id", str), _field(data, "name", str)
        if not ID_RE.fullmatch(job_id):
            raise ValueError(f"invalid job id {job_id[:64]!r}")
        if not NAME_RE.fullmatch(name):
            raise ValueError(f"invalid job name {name[:64]!r}")
        argv = _field(data, "argv", list)
        if len(argv) > MAX_ARGS or not all(isinstance(a, str) and "\0" not in a for a in argv):
            raise ValueError(f"field 'argv' must be a list of at most {MAX_ARGS} strings without NUL bytes")
        submitted = _field(data, "submitted", str)
        from .result import Result

        attempts = data.get("attempts", [])
        if not isinstance(attempts, list):
            raise ValueError("field 'attempts' must be a list of objects")
        try:
            parsed = tuple(Result.from_json(a) for a in attempts)
        except ValueError as e:
            raise ValueError(f"field 'attempts': {e}") from None
        unique = data.get("unique")
        if unique is not None and (not isinstance(unique, str) or not 0 < len(unique) <= MAX_UNIQUE):
            raise ValueError(f"field 'unique' must be a string of 1 to {MAX_UNIQUE} characters")
        follows = data.get("follows")
        return cls(
            unique=unique,
            on_success=_optional_name(data, "on_success"),
            on_failure=_optional_name(data, "on_failure"),
            follows=None if follows is None else Follows.from_json(follows),
            id=job_id,
            name=name,
            argv=tuple(argv),
            submitted=submitted[:64],
            submitter=Submitter.from_json(data.get("submitter")),
            limits=Limits.from_json(data.get("limits", {})),
            schedule=Schedule.from_json(data.get("schedule", {})),
            attempts=parsed,
            extra={k: v for k, v in data.items() if k not in KNOWN_KEYS},
        )

    def but(self, **changes: Any) -> Job:
        return self._replace(**changes)

    def argv_bytes(self) -> list[bytes]:
        """The arguments as the bytes the submitter gave (non-UTF-8 survives)."""
        return [os.fsencode(a) for a in self.argv]

    @property
    def interruptions(self) -> int:
        """Runs its processor's death cut short (``max-interruptions``, result.Cause)."""
        return sum(1 for a in self.attempts if a.counts_as_interruption)

    @property
    def lost_runs(self) -> int:
        """Runs lost with their machine or scope (``max-lost-runs``, result.Cause)."""
        return sum(1 for a in self.attempts if a.counts_as_lost)

    @property
    def failures(self) -> int:
        """Runs that used up a retry."""
        return sum(1 for a in self.attempts if a.counts_as_failure)
