"""Times as people write them and as miniq stores them.

Stored times are ISO 8601 in UTC with microseconds (``now_iso``).  People
write durations as ``90s``, ``10m``, ``1h30m``, ``2d`` and points in time as
``18:00`` or ``2026-12-24T18:00`` (``--at``); lists show relative times as
``5m ago`` or ``in 3h``.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:
    from datetime import datetime

_TIME_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d)?\s*")


def now_iso() -> str:
    """Now in UTC, ``2026-11-29T16:31:00.123456+00:00`` (without importing datetime:
    ``miniq enqueue`` must start fast)."""
    seconds, micro = divmod(time.time_ns() // 1000, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}+00:00"


def iso(ts: float, timespec: str = "microseconds") -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec=timespec)


def timestamp(text: str) -> float:
    """Unix time of an ISO 8601 string; ``ValueError`` if it is not one."""
    from datetime import datetime, timezone

    if not isinstance(text, str) or len(text) > 64:
        raise ValueError(f"not a time: {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_duration(text: str, allow_zero: bool = False) -> float:
    """Parse ``90``, ``90s``, ``10m``, ``1h30m``, ``2d`` or ``500ms`` into seconds."""
    parts = _DURATION_PART.findall(text.strip())
    joined = "".join(n + (u or "") for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text):
        raise BadInput(f"invalid duration {text!r}: expected e.g. 90s, 10m, 1h30m or 2d")
    seconds = sum(float(n) * _TIME_UNITS[u or "s"] for n, u in parts)
    if seconds <= 0 and not allow_zero:
        raise BadInput(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


def parse_at(text: str, now: datetime | None = None) -> float:
    """Parse ``--at``: an ISO date and time (local unless it has an offset),
    or ``HH:MM[:SS]`` meaning the next such time.  Returns Unix time."""
    from datetime import datetime

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


def relative(text: str | None, now: float | None = None) -> str:
    """``12s ago``, ``5m ago``, ``in 3h`` for an ISO time; ``""`` for none."""
    if not text:
        return ""
    try:
        delta = (time.time() if now is None else now) - timestamp(text)
    except ValueError:
        return "?"
    amount = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if amount >= size:
            shown = f"{int(amount // size)}{unit}"
            break
    else:
        shown = f"{int(amount)}s"
    return f"in {shown}" if delta < 0 else f"{shown} ago"
