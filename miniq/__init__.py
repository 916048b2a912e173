"""miniq: a daemonless job queue run by systemd.

The library is the API; the CLI is a thin layer over it::

    from miniq import Queue
    job = Queue(root).enqueue("notify", ["Title", "message"])
"""

from __future__ import annotations

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
