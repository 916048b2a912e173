"""When a job may run: priority, earliest time, dependencies, retries.

Priorities run from -1000 to 1000 (higher first, submission order within a
priority).  A job with a ``not_before`` in the future or unfinished ``after``
dependencies waits in ``delayed/``; a failed job with retries left waits
there for its backoff: 1 s, 2 s, 4 s... doubling, at most an hour.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from .timeparse import iso, timestamp

MIN_PRIORITY, MAX_PRIORITY = -1000, 1000
MAX_RETRIES = 100
MAX_AFTER = 64
MAX_BACKOFF = 3600.0
#: The latest due time a stored job may have: 13 digits of milliseconds, as
#: delayed/ names hold it (layout.py), so year 2286.  A person may ask for at
#: most ten years ahead (timeparse.MAX_AHEAD); a file asking for more is rejected.
MAX_DUE = (10**13 - 1) / 1000
ID_RE = re.compile(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{8}")


def backoff(failed_attempts: int) -> float:
    """Seconds before the next retry: 1, 2, 4, ... doubling, at most an hour."""
    return float(min(2 ** min(max(failed_attempts - 1, 0), 12), MAX_BACKOFF))


def _whole(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"field 'schedule.{key}' must be a whole number from {low} to {high}, not {value!r}")
    return value


class Schedule(NamedTuple):
    """When a job may run."""

    priority: int = 0  # higher runs first; submission order within a priority
    not_before: float | None = None  # Unix time
    after: tuple[str, ...] = ()  # ids that must have succeeded first
    retries: int = 0  # further attempts after a failure

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.priority:
            data["priority"] = self.priority
        if self.not_before is not None:
            data["not_before"] = iso(self.not_before, "milliseconds")
        if self.after:
            data["after"] = list(self.after)
        if self.retries:
            data["retries"] = self.retries
        return data

    @classmethod
    def from_json(cls, data: Any) -> Schedule:
        """Read a schedule, every field checked; ``ValueError`` if any is wrong."""
        if not isinstance(data, dict):
            raise ValueError("field 'schedule' must be an object")
        not_before = data.get("not_before")
        if not_before is not None:
            try:
                not_before = timestamp(not_before)
            except (ValueError, TypeError, OverflowError):
                raise ValueError(f"field 'schedule.not_before' must be an ISO 8601 time, not {not_before!r}") from None
            if not 0 <= not_before <= MAX_DUE:
                raise ValueError("field 'schedule.not_before' must be a time from 1970 to 2286")
        after = data.get("after", [])
        if not isinstance(after, list) or len(after) > MAX_AFTER or not all(isinstance(a, str) and ID_RE.fullmatch(a) for a in after):
            raise ValueError(f"field 'schedule.after' must be a list of at most {MAX_AFTER} job ids")
        return cls(
            priority=_whole(data, "priority", MIN_PRIORITY, MAX_PRIORITY),
            not_before=not_before,
            after=tuple(after),
            retries=_whole(data, "retries", 0, MAX_RETRIES),
        )

    def waits(self, now: float) -> bool:
        """Whether a job with this schedule goes to ``delayed/`` rather than ``queue/``."""
        return bool(self.after) or (self.not_before is not None and self.not_before > now)
