"""miniq: a daemonless job queue run by systemd.

The library is the API; the CLI is a thin layer over it::

    from miniq import Queue
    job = Queue(root).enqueue("notify", ["Title", "message"])
"""

from .errors import MiniqError
from .queue import Queue

__version__ = "0.1.0"
__all__ = ["MiniqError", "Queue", "__version__"]
