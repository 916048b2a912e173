"""The one error base of miniq.

Every failure a user can act on is a ``MiniqError`` (or a subclass) whose
message says what was expected and where.  Only the CLI turns these into
``Error: ...`` lines and exit codes; library callers catch them as usual.
Errors of dependencies (pystemd, D-Bus, the file system) are translated into
these where they happen, in miniq's words.
"""

from __future__ import annotations


class MiniqError(Exception):
    """Base class of every error miniq reports to a user."""

    #: The exit code the CLI uses for this error (see README, "Exit codes").
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(MiniqError):
    """The user asked for something invalid; nothing was written."""

    exit_code = 2


class UnknownJob(BadInput):
    """No job with that id exists in any state directory."""

    exit_code = 3


class SystemdUnavailable(MiniqError):
    """systemd or its D-Bus API cannot be reached."""

    exit_code = 4


class NotPermitted(MiniqError):
    """The caller may not do this: another user's job, or a queue closed to them."""

    exit_code = 5


class Busy(MiniqError):
    """Too many requests open at once: the caller's own, or the helper's; try again later."""

    exit_code = 6


def os_failure(what: str, e: OSError) -> MiniqError:
    """``what`` failed with ``e``: a ``MiniqError`` naming the file, and the
    second one of a rename or link, so that a report says which call failed."""
    names = " -> ".join(str(n) for n in (e.filename, e.filename2) if n is not None)
    return MiniqError(f"{what}: {e.strerror or e}" + (f" ({names})" if names else ""))
