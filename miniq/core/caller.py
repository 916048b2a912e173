"""Who is asking the system queue's helper: the caller, as the kernel says.

A user cannot write to ``/var/lib/miniq`` (root's, ``0700``); their
``miniq --system COMMAND`` goes through the helper (server.py), which acts
for the peer the kernel names on the socket (``SO_PEERCRED``: uid, gid, PID;
``SO_PEERGROUPS``: the groups).  That identity is the only one miniq
believes, never a file's contents.  This module is low in the layers: the
queue (queue.py) uses ``Caller`` to refuse another user's jobs.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass

from .errors import NotPermitted

SO_PEERGROUPS = 59


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the kernel says: uid, primary gid and groups."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    pid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def group_names(self) -> tuple[str, ...]:
        names = []
        for gid in (self.gid, *self.groups):
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return tuple(dict.fromkeys(names))

    def may_see(self, owner: int) -> bool:
        return self.is_root or owner == self.uid

    def check(self, owner: int, job_id: str) -> None:
        """``NotPermitted`` unless the caller may act on a job owned by ``owner``."""
        if not self.may_see(owner):
            raise NotPermitted(f"job {job_id} belongs to another user; you may act only on your own jobs")


def peer(sock: socket.socket) -> Caller:
    """The caller on the other end of ``sock``, from the kernel."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
    except OSError:
        try:
            groups = tuple(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except KeyError:
            pass
    return Caller(uid, gid, tuple(groups), pid)
