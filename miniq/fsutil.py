"""Durable file operations: the only way miniq changes state on disk.

Invariant: a file appears under its final name only after its bytes reached
the disk (write to a temporary name in the same file system, fsync, rename,
fsync the directory).  A reader therefore never sees a partial file, even
after a power cut.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, so that a rename into it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some network file systems refuse fsync on directories; their
        # rename is synchronous on the server, so there is nothing to flush.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def write_durably(tmp_dir: Path, final: Path, data: bytes, mode: int = 0o644) -> None:
    """Publish ``data`` at ``final`` atomically, staging it in ``tmp_dir``.

    ``tmp_dir`` must be on the same file system as ``final``; it is not the
    destination directory so that watchers of that directory (the path unit)
    never see temporary files.
    """
    tmp = tmp_dir / f".{final.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(final.parent)


def move_durably(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` and flush both directories."""
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)
