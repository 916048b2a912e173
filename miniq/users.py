"""Who a job runs as, and which files a root processor may trust.

A root processor runs each job as the owner of its job file: the kernel says
who that is (the file's uid), never the file's contents.  In the system queue
only miniq's root helper (server.py) writes job files, and it gives each file to
the user the kernel named as its peer on the socket.

A root processor executes job types and reads miniq.conf only when they are
*trusted*: owned by root, not writable by group or others, and the same holds
for every directory above them; a symbolic link is followed only if the link
and everything it leads to pass the same test.  Anything else could let a
user run code as root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spawn import Identity


def untrusted_reason(path: str | Path) -> str | None:
    """Why a root processor must not trust ``path``, or None if it may.
    (Strings, not pathlib: a root processor asks this for every job.)"""
    seen = 0
    current = os.path.abspath(path)
    while True:
        seen += 1
        if seen > 40:
            return f"{path} has too many levels of symbolic links"
        problem = _check_chain(current)
        if problem:
            return problem
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return f"{current} does not exist"
        if not stat.S_ISLNK(st.st_mode):
            return None
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))


def _check_chain(path: str) -> str | None:
    """Each of ``path`` and its parents: root's and not writable by others."""
    part = path
    while True:
        try:
            st = os.lstat(part)
        except FileNotFoundError:
            return f"{part} does not exist"
        if st.st_uid != 0:
            return f"{part} is owned by uid {st.st_uid}, not root"
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
            sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and part != path
            if not sticky_dir:
                return f"{part} is writable by {'group' if st.st_mode & 0o020 else 'others'}"
        parent = os.path.dirname(part)
        if parent == part:
            return None
        part = parent


def identity_for(owner_uid: int, claimed_uid: int) -> Identity | str:
    """The identity to run a job as in a root processor, or why it must not run."""
    from .spawn import Identity  # ctypes: only in a processor, never for root's enqueue

    if claimed_uid != owner_uid:
        return f"it says it was submitted by uid {claimed_uid}, but its file belongs to uid {owner_uid}"
    try:
        return Identity.of(owner_uid)
    except KeyError:
        return f"its owner, uid {owner_uid}, has no account on this host"


def is_root() -> bool:
    return os.geteuid() == 0
