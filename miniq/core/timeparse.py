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
_DURATION_PART = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)\s*(ms|sec|min|s|m|h|d)?\s*", re.ASCII)
#: The longest duration miniq takes from a person: delays, time limits, windows, ages.
MAX_DURATION = 10 * 365 * 86400.0
#: The latest due time a job may have: ten years from now (README, "Exit codes"; layout.py's names hold 13 digits of ms).
MAX_AHEAD = MAX_DURATION


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


def parse_duration(text: str, allow_zero: bool = False, most: float = MAX_DURATION) -> float:
    """Parse ``90``, ``90s``, ``10m``, ``1h30m``, ``2d`` or ``500ms`` into seconds,
    at most ``most`` (ten years); ``BadInput`` for anything else."""
    wanted = "expected e.g. 90s, 10m, 1h30m or 2d"
    parts = _DURATION_PART.findall(text.strip())
    joined = "".join(n + (u or "") for n, u in parts)
    # A bare number is seconds, and alone: "1h30" or twelve digits and twelve more are not durations.
    if not parts or joined != re.sub(r"\s+", "", text) or (len(parts) > 1 and not all(u for _, u in parts)):
        raise BadInput(f"invalid duration {_shown(text)}: {wanted}")
    seconds = sum(float(n) * _TIME_UNITS[u or "s"] for n, u in parts)
    if seconds <= 0 and not allow_zero:
        raise BadInput(f"invalid duration {_shown(text)}: it must be longer than zero")
    if seconds > most:
        raise BadInput(f"invalid duration {_shown(text)}: at most {_span(most)}")
    return seconds


def _span(seconds: float) -> str:
    return f"{seconds / (365 * 86400):g} years" if seconds >= 365 * 86400 else f"{seconds:g} s"


def _shown(text: str) -> str:
    """A person's text in an error: quoted, control characters visible, cut short."""
    from .face import visible

    return "'" + visible(text if len(text) <= 64 else text[:64] + "...") + "'"


def parse_at(text: str, now: datetime | None = None) -> float:
    """Parse ``--at``: an ISO date and time (local unless it has an offset),
    or ``HH:MM[:SS]`` meaning the next such time.  Returns Unix time, from
    the Unix epoch to ``MAX_AHEAD`` (ten years) from now; ``BadInput`` else."""
    from datetime import datetime

    now = now or datetime.now().astimezone()
    wanted = "expected e.g. 2026-12-24T18:00, '2026-12-24 18:00' or 18:00"
    try:
        if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text.strip(), re.ASCII):
            parts = [int(p) for p in text.strip().split(":")]
            at = now.replace(hour=parts[0], minute=parts[1], second=parts[2] if len(parts) > 2 else 0, microsecond=0)
            if at <= now:
                at = at.fromtimestamp(at.timestamp() + 86400, at.tzinfo)
            return at.timestamp()
        if len(text) > 64:
            raise ValueError(text)
        at = datetime.fromisoformat(text.strip())
        if at.tzinfo is None:
            at = at.astimezone()
        moment = at.timestamp()
    except (ValueError, OverflowError, OSError):
        raise BadInput(f"invalid time {_shown(text)} for --at: {wanted}") from None
    if not 0 <= moment <= now.timestamp() + MAX_AHEAD:
        raise BadInput(f"invalid time {_shown(text)} for --at: expected a time from 1970 to 10 years from now")
    return moment


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
