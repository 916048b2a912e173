"""Linux inotify through ctypes: wake up when a directory changes.

Used by the processor (new queue entries) and ``miniq wait`` (new records).
inotify sees only changes made through this machine's kernel: on a root
shared over NFS, entries created by other machines arrive unannounced, so
every user of this module also looks again on its own from time to time.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

from .files import libc

IN_CREATE = 0x100
IN_MOVED_TO = 0x80
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_Q_OVERFLOW = 0x4000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
ARRIVALS = IN_CREATE | IN_MOVED_TO
CHANGES = ARRIVALS | IN_DELETE | IN_MOVED_FROM

_HEADER = struct.Struct("iIII")


class Inotify:
    """A non-blocking inotify descriptor; ``events()`` drains what arrived."""

    def __init__(self) -> None:
        fd: int = libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd = fd
        self.watches: dict[int, Path] = {}

    def watch(self, path: Path, mask: int = ARRIVALS) -> None:
        wd: int = libc().inotify_add_watch(self.fd, os.fsencode(path), mask | IN_ONLYDIR)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {path}")
        self.watches[wd] = path

    def fileno(self) -> int:
        return self.fd

    def events(self) -> tuple[list[tuple[Path, str]], bool]:
        """(directory, name) of every event so far, and whether some were lost."""
        found: list[tuple[Path, str]] = []
        overflow = False
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return found, overflow
            offset = 0
            while offset < len(buf):
                wd, mask, _, length = _HEADER.unpack_from(buf, offset)
                offset += _HEADER.size
                name = buf[offset : offset + length].rstrip(b"\0")
                offset += length
                if mask & IN_Q_OVERFLOW:
                    overflow = True
                elif wd in self.watches and name:
                    found.append((self.watches[wd], os.fsdecode(name)))

    def unwatch(self) -> None:
        """Remove every watch, well before ``close``.

        Closing an inotify descriptor that still has watches, or had them
        removed just before, waits for the kernel to reclaim them: 13.7 ms
        median here (30 closes; fsnotify waits for its mark reaper).  Removed
        half a millisecond or more before the close, they cost the close
        0.1 ms.  A ``miniq wait`` pays that wait in its exit, which a script
        waits for, so it removes its watches as soon as its jobs are done
        and closes after reading their records (waiting.py).
        """
        for wd in list(self.watches):
            libc().inotify_rm_watch(self.fd, wd)
        self.watches.clear()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_watch(*paths: Path, mask: int = ARRIVALS) -> Inotify | None:
    """An inotify watching ``paths``, or None where inotify is unavailable."""
    try:
        ino = Inotify()
    except (OSError, AttributeError):
        return None
    try:
        for path in paths:
            ino.watch(path, mask)
    except OSError:
        ino.close()
        return None
    return ino
