"""miniq: a daemonless job queue run by systemd.

The library is the API; the CLI is a thin layer over it::

    from miniq import Queue
    job = Queue(root).enqueue("notify", ["Title", "message"])

Jobs, results, limits and settings are frozen dataclasses.  The small
records a processor only passes around (who claims, who is run as, a spawned
child, a slot, a stale claim, a limit's declaration, the kernel's accounting)
are ``NamedTuple``s, or plain classes with ``__slots__`` where they change:
Python 3.11 compiles a dataclass's methods when its module is imported, about
0.9 ms a class here, and a cold ``miniq process`` imported twenty of them
before its first job could run (six now).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

__version__ = "0.3.0"
__all__ = ["MiniqError", "Queue", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `miniq enqueue` loads only what it needs.
    if name == "Queue":
        from .queue import Queue

        return Queue
    if name == "MiniqError":
        from .errors import MiniqError

        return MiniqError
    raise AttributeError(name)
