"""Resource limits of a job, and the parsing of their human spellings.

A ``Limits`` value holds each limit in systemd's own unit (bytes, percent of
one CPU, tasks, seconds); ``None`` means "not set here".  Limits merge from
three layers, most specific first: the job file (``miniq enqueue --memory-max``),
the job type's section in ``miniq.conf``, then its ``[limits]`` section.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, ClassVar

from .errors import BadInput

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_TIME_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """Parse ``512M``, ``1G``, ``1.5G`` or a byte count (base 1024, as systemd does)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not m:
        raise BadInput(f"invalid size {text!r}: expected a number with an optional K, M, G or T suffix, e.g. 512M")
    value = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])
    if value < 4096:
        raise BadInput(f"invalid size {text!r}: a memory limit below 4K cannot run anything")
    return value


def parse_percent(text: str) -> int:
    """Parse a CPU quota such as ``50%`` or ``200%`` (percent of one CPU)."""
    m = re.fullmatch(r"\s*(\d+)\s*%?\s*", text)
    if not m or int(m.group(1)) < 1:
        raise BadInput(f"invalid CPU quota {text!r}: expected a percentage of one CPU of at least 1, e.g. 50%")
    return int(m.group(1))


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``10m``, ``1h30m``, ``2d`` or ``500ms`` into seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)?\s*", text.strip())
    joined = "".join(n + (u or "") for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text):
        raise BadInput(f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h30m or 2d")
    seconds = sum(float(n) * _TIME_UNITS[u or "s"] for n, u in parts)
    if seconds <= 0:
        raise BadInput(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


def parse_tasks(text: str) -> int:
    """Parse a maximum number of tasks (processes and threads), at least 2."""
    if not text.strip().isdigit() or int(text) < 2:
        raise BadInput(f"invalid tasks maximum {text!r}: expected a whole number of at least 2 (the job and miniq's keeper process)")
    return int(text)


def parse_nice(text: str) -> int:
    """Parse a niceness between -20 and 19."""
    try:
        value = int(text)
    except ValueError:
        value = 99
    if not -20 <= value <= 19:
        raise BadInput(f"invalid niceness {text!r}: expected a whole number from -20 to 19")
    return value


@dataclass(frozen=True)
class Limits:
    """Per-job resource limits; ``None`` means unset at this layer."""

    memory_max: int | None = None
    cpu_quota: int | None = None
    tasks_max: int | None = None
    timeout: float | None = None
    nice: int | None = None

    #: How each field is spelled on the command line and in miniq.conf.
    PARSERS: ClassVar[dict[str, tuple[str, Callable[[str], Any]]]] = {
        "memory-max": ("memory_max", parse_size),
        "cpu-quota": ("cpu_quota", parse_percent),
        "tasks-max": ("tasks_max", parse_tasks),
        "timeout": ("timeout", parse_duration),
        "nice": ("nice", parse_nice),
    }

    @classmethod
    def parse(cls, options: Mapping[str, str | None], where: str = "") -> Limits:
        """Build limits from option spellings (``{"memory-max": "512M"}``)."""
        values: dict[str, Any] = {}
        for key, text in options.items():
            if text is None:
                continue
            if key not in cls.PARSERS:
                known = ", ".join(cls.PARSERS)
                raise BadInput(f"unknown limit {key!r}{where}: expected one of {known}")
            attr, parser = cls.PARSERS[key]
            try:
                values[attr] = parser(text)
            except BadInput as e:
                raise BadInput(e.message + where) from None
        return cls(**values)

    def over(self, fallback: Limits) -> Limits:
        """These limits, with unset ones taken from ``fallback``."""
        return replace(fallback, **{k: v for k, v in asdict(self).items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: Any) -> Limits:
        if not isinstance(data, dict):
            raise ValueError("limits must be an object")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def is_empty(self) -> bool:
        return not self.to_json()
