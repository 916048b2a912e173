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
