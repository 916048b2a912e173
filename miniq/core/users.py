"""Who a job runs as, and which files a root processor may trust.

A root processor runs each job as the owner of its job file: the kernel says
who that is (the file's uid), never the file's contents.  In the system queue
only miniq's root helper (server.py) writes job files, and it gives each file to
the user the kernel named as its peer on the socket.

A root processor executes job types and reads miniq.conf only when they are
*trusted*: owned by root, not writable by group or others, and the same holds
for every directory the path passes through; a symbolic link, in the file's
own name or in a directory above it, is followed only if the link and
everything it leads to pass the same test.  Anything else could let a
user run code as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path
from typing import NamedTuple


class Identity(NamedTuple):
    """A user to run a job as: from the password and group databases."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    user: str
    home: str
    shell: str

    @classmethod
    def of(cls, uid: int) -> Identity:
        """``KeyError`` if the uid has no account."""
        entry = pwd.getpwuid(uid)
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(uid, entry.pw_gid, groups, entry.pw_name, entry.pw_dir, entry.pw_shell or "/bin/sh")

    def group_names(self) -> tuple[str, ...]:
        names = []
        for gid in self.groups:
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return tuple(names)


def untrusted_reason(path: str | Path) -> str | None:
    """Why a root processor must not trust ``path``, or None if it may.

    Walks the path from ``/`` one name at a time, as the kernel resolves it:
    every directory it passes through and the entry it ends at must be
    root's and not writable by group or others (a sticky directory above is
    fine: nobody can replace root's entries in it); a symbolic link, wherever
    it is in the path, must be root's, and what it leads to is walked the same
    way from where the link is.  So a root-owned file reached through a link
    to a user's directory is not trusted: the user could replace it.
    (Strings, not pathlib: a root processor asks this for every job.)"""
    asked = os.path.abspath(path)
    todo = asked.split("/")[1:]
    current = "/"
    links = 0
    problem = _judge("/", os.lstat("/"), last=False)
    if problem:
        return problem
    while todo:
        name = todo.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, name)
        try:
            st = os.lstat(candidate)
        except (FileNotFoundError, NotADirectoryError):
            return f"{os.path.join(candidate, *todo)} does not exist"
        if stat.S_ISLNK(st.st_mode):
            if st.st_uid != 0:
                return f"{candidate} is owned by uid {st.st_uid}, not root"
            links += 1
            if links > 40:
                return f"{asked} has too many levels of symbolic links"
            target = os.readlink(candidate)
            todo = target.split("/") + todo
            if target.startswith("/"):
                current = "/"
            continue
        problem = _judge(candidate, st, last=not any(n not in ("", ".") for n in todo))
        if problem:
            return problem
        current = candidate
    return None


def _judge(path: str, st: os.stat_result, last: bool) -> str | None:
    """Whether one entry on the way may be trusted: root's, written by root alone."""
    if st.st_uid != 0:
        return f"{path} is owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and not last
        if not sticky_dir:
            return f"{path} is writable by {'group' if st.st_mode & 0o020 else 'others'}"
    return None


def identity_for(owner_uid: int, claimed_uid: int) -> Identity | str:
    """The identity to run a job as in a root processor, or why it must not run."""
    if claimed_uid != owner_uid:
        return f"it says it was submitted by uid {claimed_uid}, but its file belongs to uid {owner_uid}"
    try:
        return Identity.of(owner_uid)
    except KeyError:
        return f"its owner, uid {owner_uid}, has no account on this host"


def is_root() -> bool:
    return os.geteuid() == 0
