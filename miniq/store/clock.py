"""The file server's clock: what leases and ages in a shared root are judged by.

Machines sharing a root over NFS may disagree about the time by minutes; the
times the file server puts on files (mtime set with utime and no time, ctime)
all come from its own clock.  So "now" is read from the server too (claims.py).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Protocol

from ..core import files
from ..core.proc import tag


class Layout(Protocol):
    """Where a queue root keeps its probes (layout.py)."""

    def clock_probe(self, claimer: str) -> Path: ...


class ServerClock:
    """The file server's idea of "now", read from a probe file's mtime.

    The probe (``tmp/clock@WHO``, WHO the reader's ``Claimer.name``, by
    default this process's ``proc.tag()``: the same) exists only while it is read: it is
    removed at once, so no reader leaves one behind; one left by a process
    killed in between is removed by ``clean_tmp``.  The server's time is
    kept as an offset from this machine's monotonic clock for ``REUSE``
    seconds, so a step of this machine's wall clock never skews it.
    """

    REUSE = 1.0

    def __init__(self, layout: Layout, who: str | None = None) -> None:
        self.path = layout.clock_probe(who if who is not None else tag())
        self._offset: float | None = None
        self._read = 0.0

    def now(self) -> float:
        if self._offset is not None and time.monotonic() - self._read < self.REUSE:
            return time.monotonic() + self._offset
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        try:
            os.utime(self.path, None)  # "now" as the server sees it
            mtime = files.fresh_mtime(self.path)
        finally:
            self.path.unlink(missing_ok=True)
        if mtime is None:
            raise FileNotFoundError(self.path)
        self._read = time.monotonic()
        self._offset = mtime - self._read
        return mtime

    def age(self, path: Path) -> float | None:
        """Seconds since ``path`` was last touched (a claim renewed), by the
        server's clock; None if it is gone.  Opens nothing (files.fresh_mtime)."""
        mtime = files.fresh_mtime(path)
        return None if mtime is None else self.now() - mtime

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
