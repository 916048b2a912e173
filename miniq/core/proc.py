"""This process as other processes can judge it: boot, PID namespace, start time.

A PID alone names a process only until it exits: PIDs are reused, start
again after a reboot, and mean nothing across PID namespaces.  Host name,
kernel boot id, PID namespace, PID and start time together name one process
for good; another process may call it dead only when it shares the boot and
the namespace and no such process exists (claims.py).  Claims and staging
files carry this name (``tag``), so what a dead process left is known as its.
"""

from __future__ import annotations

import functools
import os
import re
from typing import NamedTuple

_HOST_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@functools.lru_cache(maxsize=1)
def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")
    except OSError:
        return "0" * 32


def pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def process_start(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses.
    return int(stat_line.rsplit(b")", 1)[1].split()[19])


def safe_host() -> str:
    """The host name, with only characters safe in a file name."""
    return _HOST_CHARS.sub("_", os.uname().nodename)[:64] or "host"


_tag: tuple[int, str] | None = None


def tag() -> str:
    """``HOST+BOOT+PIDNS+PID+START`` of this process (claims.py's ``Claimer.name``)."""
    global _tag
    pid = os.getpid()
    if _tag is None or _tag[0] != pid:  # a forked child is another process
        _tag = (pid, f"{safe_host()}+{boot_id()}+{pid_namespace()}+{pid}+{process_start(pid) or 0}")
    return _tag[1]


class Claimer(NamedTuple):
    """A process named for good (module comment): who holds a claim (claims.py)."""

    host: str
    boot: str
    pidns: int
    pid: int
    start: int

    @classmethod
    def current(cls) -> Claimer:
        pid = os.getpid()
        return cls(safe_host(), boot_id(), pid_namespace(), pid, process_start(pid) or 0)

    @property
    def name(self) -> str:
        return f"{self.host}+{self.boot}+{self.pidns}+{self.pid}+{self.start}"

    @classmethod
    def parse(cls, name: str | None) -> Claimer | None:
        parts = (name or "").split("+")
        if len(parts) != 5 or not all(p.isdigit() for p in parts[2:]) or not re.fullmatch(r"[0-9a-f]{32}", parts[1]):
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]), int(parts[4]))

    def provably_dead(self, judge: Claimer) -> bool:
        """True only if this claimer's process is certainly gone (module comment)."""
        if (self.boot, self.pidns) != (judge.boot, judge.pidns):
            return False
        return process_start(self.pid) != self.start
