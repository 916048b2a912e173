"""miniq: a daemonless job queue run by systemd.

The library is the API; the CLI is a thin layer over it::

    from miniq import Queue
    job = Queue(root).enqueue("notify", ["Title", "message"])

Jobs, results, limits and settings are ``NamedTuple``s: immutable, with
``_replace`` (``but``) and ``_fields``.  Everything else a processor passes
around is a ``NamedTuple`` too, or a plain class with ``__slots__`` where it
changes (a claim, a run's summary).  Not dataclasses: Python 3.11 compiles a
dataclass's methods when its module is imported (about 1.5 ms a class here),
and ``import dataclasses`` brings ``inspect``, ``ast``, ``dis`` and
``tokenize`` (about 14 ms); a cold ``miniq process`` paid both before its
first job could run.  Commands a processor never runs (``list``, ``stats``,
``doctor``...) still use dataclasses.
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
