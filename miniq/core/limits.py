"""Resource limits of a job: one declaration per limit.

``LIMITS`` is the only place a limit is declared: its option name (the same
on the command line and in miniq.conf), its parser for what people write, the
range a stored value must be in, its help text, and the systemd property it
becomes.  The CLI options, the scope properties, the validation of job files
and a docs check of README's table are all generated from it.

A ``Limits`` value holds each limit in systemd's own unit (bytes, percent of
one CPU, tasks, seconds); ``None`` means "not set here".  Limits merge from
layers, most specific first: the job file (``miniq enqueue --memory-max``),
then the sections of miniq.conf (see config.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .errors import BadInput

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MAX_SIZE = 2**62
MAX_TIMEOUT = 10 * 365 * 86400.0


def parse_size(text: str) -> int:
    """Parse ``512M``, ``1G``, ``1.5G`` or a byte count (base 1024, as systemd does)."""
    m = re.fullmatch(r"\s*(\d{1,20}(?:\.\d{1,9})?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE | re.ASCII)
    if not m:
        raise BadInput(f"invalid size {text!r}: expected a number with an optional K, M, G or T suffix, e.g. 512M")
    value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    if value < 4096:
        raise BadInput(f"invalid size {text!r}: a memory limit below 4K cannot run anything")
    if value > MAX_SIZE:
        raise BadInput(f"invalid size {text!r}: at most 4E (2^62 bytes)")
    return value


def parse_percent(text: str) -> int:
    """Parse a CPU quota such as ``50%`` or ``200%`` (percent of one CPU)."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*%?\s*", text, re.ASCII)
    if not m or not 1 <= int(m.group(1)) <= 100_000:
        raise BadInput(f"invalid CPU quota {text!r}: expected a percentage of one CPU from 1 to 100000, e.g. 50%")
    return int(m.group(1))


def parse_tasks(text: str) -> int:
    """Parse a maximum number of tasks (processes and threads), at least 2."""
    if not re.fullmatch(r"\s*\d{1,7}\s*", text, re.ASCII) or not 2 <= int(text) <= 4_194_304:
        raise BadInput(f"invalid tasks maximum {text!r}: expected a whole number from 2 (the job and miniq's keeper process) to 4194304")
    return int(text)


def parse_timeout(text: str) -> float:
    from .timeparse import parse_duration

    return parse_duration(text, most=MAX_TIMEOUT)


#: How long a job gets after SIGTERM (its time limit, a stop) before SIGKILL, unless it says: systemd's default.
DEFAULT_STOP_TIMEOUT = 10.0
MAX_STOP_TIMEOUT = 3600.0
#: systemd stops a scope this long after miniq should have (``RuntimeMaxSec=``): a backstop for a processor that died.
BACKSTOP = 30.0


def parse_stop_timeout(text: str) -> float:
    from .timeparse import parse_duration

    return parse_duration(text, most=MAX_STOP_TIMEOUT)


def parse_nice(text: str) -> int:
    """Parse a niceness between -20 and 19."""
    value = int(text) if re.fullmatch(r"\s*[-+]?\d{1,2}\s*", text, re.ASCII) else 99
    if not -20 <= value <= 19:
        raise BadInput(f"invalid niceness {text!r}: expected a whole number from -20 to 19")
    return value


class LimitSpec(NamedTuple):
    """One limit: everything miniq knows about it, in one place."""

    key: str  # option name: --memory-max on the command line, memory-max in miniq.conf
    attr: str  # field of Limits
    parse: Callable[[str], Any]
    lowest: float
    highest: float
    integer: bool
    help: str
    example: str  # for README's table
    systemd: str  # what README calls it
    #: The scope property: (name, D-Bus signature, value -> property value), or None.
    prop: tuple[bytes, bytes, Callable[[Any], Any]] | None
    #: How a value reads to a person, as its option takes it.
    show: Callable[[Any], str] = str
    #: A lower value gives a job more (niceness); for the others a higher one does.
    lower_is_more: bool = False

    def more_than(self, value: Any, cap: Any) -> bool:
        """Whether ``value`` gives a job more than ``cap`` allows."""
        return bool(value < cap) if self.lower_is_more else bool(value > cap)

    def check(self, value: Any) -> Any:
        """A stored value, validated; ``ValueError`` naming what is wrong."""
        kinds = (int,) if self.integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not self.lowest <= value <= self.highest:
            kind = "whole number" if self.integer else "number"
            raise ValueError(f"limit {self.key!r} must be a {kind} from {self.lowest:g} to {self.highest:g}, not {value!r}")
        return value


def show_size(value: int) -> str:
    """``67108864`` -> ``64M``: the largest unit that divides it, as parse_size reads it back."""
    for unit in ("T", "G", "M", "K"):
        if value % _SIZE_UNITS[unit] == 0:
            return f"{value // _SIZE_UNITS[unit]}{unit}"
    return str(value)


def show_seconds(value: float) -> str:
    """``60.0`` -> ``1m``, ``315360000`` -> ``3650d``, ``1.5`` -> ``1.5s``: as parse_duration reads it back."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


LIMITS: tuple[LimitSpec, ...] = (
    LimitSpec("memory-max", "memory_max", parse_size, 4096, MAX_SIZE, True,
              "Memory limit (MemoryMax=), e.g. 512M or 2G.", "`512M`, `2G`", "`MemoryMax=`",
              (b"MemoryMax", b"t", int), show_size),
    LimitSpec("cpu-quota", "cpu_quota", parse_percent, 1, 100_000, True,
              "CPU limit in percent of one CPU (CPUQuota=), e.g. 50%.", "`50%` (of one CPU)", "`CPUQuota=`",
              (b"CPUQuotaPerSecUSec", b"t", lambda v: v * 10_000), lambda v: f"{v}%"),
    LimitSpec("tasks-max", "tasks_max", parse_tasks, 2, 4_194_304, True,
              "Maximum processes and threads (TasksMax=), e.g. 64.", "`64` (miniq's keeper process counts as one)", "`TasksMax=`",
              (b"TasksMax", b"t", int)),
    LimitSpec("timeout", "timeout", parse_timeout, 0.001, MAX_TIMEOUT, False,
              "Wall-clock limit: SIGTERM after it, SIGKILL after --stop-timeout more, e.g. 10m.", "`90s`, `10m`, `1h30m`",
              "SIGTERM, then SIGKILL (`RuntimeMaxSec=` later, a backstop)", None, show_seconds),
    LimitSpec("stop-timeout", "stop_timeout", parse_stop_timeout, 0.001, MAX_STOP_TIMEOUT, False,
              "How long a job gets after SIGTERM (its time limit, a stop) before SIGKILL, e.g. 30s (default 10s).",
              "`30s` (default `10s`)", "`TimeoutStopSec=`", None, show_seconds),
    LimitSpec("nice", "nice", parse_nice, -20, 19, True,
              "Niceness of the job, -20 to 19.", "`10`", "niceness", None, str, True),
)  # fmt: skip
BY_KEY = {spec.key: spec for spec in LIMITS}


class Limits(NamedTuple):
    """Per-job resource limits; ``None`` means unset at this layer (a
    ``NamedTuple``, not a dataclass: see miniq/__init__.py)."""

    memory_max: int | None = None
    cpu_quota: int | None = None
    tasks_max: int | None = None
    timeout: float | None = None
    stop_timeout: float | None = None
    nice: int | None = None

    @classmethod
    def parse(cls, options: Mapping[str, str | None], where: str = "", prefix: str = "") -> Limits:
        """Build limits from option spellings (``{"memory-max": "512M"}``);
        ``prefix`` is how the options are spelled where they come from (``cap-``)."""
        values: dict[str, Any] = {}
        for key, text in options.items():
            if text is None:
                continue
            spec = BY_KEY.get(key)
            if spec is None:
                raise BadInput(f"unknown limit {(prefix + key)!r}{where}: expected one of {', '.join(prefix + k for k in BY_KEY)}")
            try:
                values[spec.attr] = spec.parse(text)
            except BadInput as e:
                raise BadInput(e.message + where) from None
        return cls(**values)

    def over(self, fallback: Limits) -> Limits:
        """These limits, with unset ones taken from ``fallback``."""
        changes: dict[str, Any] = {k: v for k, v in zip(self._fields, self) if v is not None}
        return fallback._replace(**changes)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in zip(self._fields, self) if v is not None}

    @classmethod
    def from_json(cls, data: Any) -> Limits:
        """Limits from a job file, every value checked; ``ValueError`` if any is wrong."""
        if not isinstance(data, dict):
            raise ValueError("field 'limits' must be an object")
        by_attr = {spec.attr: spec for spec in LIMITS}
        values = {}
        for key, value in data.items():
            spec = by_attr.get(key)
            if spec is None:
                raise ValueError(f"unknown limit {key!r} (this miniq knows {', '.join(by_attr)})")
            values[key] = spec.check(value)
        return cls(**values)

    @property
    def stop_grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL for this job."""
        return DEFAULT_STOP_TIMEOUT if self.stop_timeout is None else self.stop_timeout

    def properties(self) -> list[tuple[bytes, bytes, Any]]:
        """The scope properties these limits become.  The time limit is
        miniq's to enforce (worker.py): systemd's ``RuntimeMaxSec=`` comes
        ``BACKSTOP`` seconds after miniq's SIGKILL would, for a processor
        that died meanwhile."""
        props = []
        for spec in LIMITS:
            value = getattr(self, spec.attr)
            if value is not None and spec.prop is not None:
                name, signature, convert = spec.prop
                props.append((name, signature, convert(value)))
        props.append((b"TimeoutStopUSec", b"t", int(self.stop_grace * 1_000_000)))
        if self.timeout is not None:
            props.append((b"RuntimeMaxUSec", b"t", int((self.timeout + self.stop_grace + BACKSTOP) * 1_000_000)))
        return props

    def is_empty(self) -> bool:
        return not self.to_json()


assert {spec.attr for spec in LIMITS} == set(Limits._fields)
