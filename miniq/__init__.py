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

The code lives in wings, lowest first: ``core`` (the words every wing
shares), ``store`` (the queue on disk), ``systemd``, ``run`` (running jobs),
``serve`` (the system queue's helper) and ``cli``; a wing imports only from
itself and lower ones (README, "Code layout").  The names below are the
library; the wings' modules are internal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.version import __version__

if TYPE_CHECKING:  # the same names for type checkers (tests/test_docs.py checks both lists agree)
    from typing import Any

    from .core.errors import (
        BadInput as BadInput,
    )
    from .core.errors import (
        Busy as Busy,
    )
    from .core.errors import (
        MiniqError as MiniqError,
    )
    from .core.errors import (
        NotPermitted as NotPermitted,
    )
    from .core.errors import (
        SystemdUnavailable as SystemdUnavailable,
    )
    from .core.errors import (
        UnknownJob as UnknownJob,
    )
    from .core.job import Job as Job
    from .core.job import State as State
    from .core.limits import Limits as Limits
    from .core.manager import Manager as Manager
    from .core.result import Outcome as Outcome
    from .core.result import Result as Result
    from .core.schedule import Schedule as Schedule
    from .run.processor import Processor as Processor
    from .store.batch import Item as Item
    from .store.batch import enqueue_batch as enqueue_batch
    from .store.listing import iterate as iterate
    from .store.queue import Queue as Queue
    from .store.records import Record as Record
    from .store.unique import AlreadyQueued as AlreadyQueued
    from .store.waiting import wait as wait


#: The library's public face: each name, and the internal module it lives in
#: (imported on first use, so that `miniq enqueue` loads only what it needs).
#: Everything else is importable from its wing (``miniq.store.claims``...) but
#: is internal: it may move between releases.
_FACE = {
    "Queue": "store.queue",
    "Job": "core.job",
    "State": "core.job",
    "Result": "core.result",
    "Outcome": "core.result",
    "Limits": "core.limits",
    "Schedule": "core.schedule",
    "Record": "store.records",
    "Item": "store.batch",
    "enqueue_batch": "store.batch",
    "iterate": "store.listing",
    "wait": "store.waiting",
    "Manager": "core.manager",
    "Processor": "run.processor",
    "MiniqError": "core.errors",
    "BadInput": "core.errors",
    "UnknownJob": "core.errors",
    "NotPermitted": "core.errors",
    "Busy": "core.errors",
    "SystemdUnavailable": "core.errors",
    "AlreadyQueued": "store.unique",
}
__all__ = [*_FACE, "__version__"]


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'miniq' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(__all__)
