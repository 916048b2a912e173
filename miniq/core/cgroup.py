"""What the kernel accounted for a job's scope, read from its cgroups.

Read while miniq's keeper process still holds the scope (scope.py): peak
memory, CPU time and OOM kills, from the cgroup v1 controllers of a hybrid
host or from cgroup v2.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path

from .files import read_all


def paths(pid: int) -> dict[str, str]:
    """The cgroup of ``pid`` in each hierarchy: {"memory": "/x.scope", "": ...}."""
    found = {}
    for line in _read_text(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            found[c] = path
    return found


def _read_text(path: str | Path) -> str:
    """A small kernel file's text (cgroupfs, /proc).  Read without io's
    buffering layers: several such files are read for every job."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return read_all(fd).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _read(path: str | Path) -> str | None:
    try:
        return _read_text(path)
    except OSError:
        return None


@functools.cache
def unified_mount() -> Path:
    """Where the cgroup v2 hierarchy is mounted (a host's layout does not
    change while a processor runs)."""
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.procs").exists():
            return candidate
    return Path("/sys/fs/cgroup")


def _stat_value(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        if line.startswith(key + " "):
            return int(line.split()[1])
    return None


class Accounting:
    """What the kernel accounted for a scope; None where it could not say."""

    __slots__ = ("cpu_usec", "memory_peak", "oom_kills")

    def __init__(self, cpu_usec: int | None = None, memory_peak: int | None = None, oom_kills: int | None = None) -> None:
        self.cpu_usec = cpu_usec
        self.memory_peak = memory_peak
        self.oom_kills = oom_kills


def accounting(cgroups: dict[str, str], unit: str) -> Accounting:
    """Peak memory, CPU time and OOM kills of ``unit``'s cgroups."""
    acct = Accounting()
    suffix = "/" + unit
    mem = cgroups.get("memory")
    if mem and mem.endswith(suffix):  # cgroup v1 memory controller
        base = "/sys/fs/cgroup/memory" + mem
        peak = _read(base + "/memory.max_usage_in_bytes")
        if peak:
            acct.memory_peak = int(peak)
        kills = _stat_value(_read(base + "/memory.oom_control"), "oom_kill")
        if kills is not None:
            acct.oom_kills = kills
    cpu = cgroups.get("cpuacct")
    if cpu and cpu.endswith(suffix):
        nanoseconds = _read("/sys/fs/cgroup/cpuacct" + cpu + "/cpuacct.usage")
        if nanoseconds:
            acct.cpu_usec = int(nanoseconds) // 1000
    unified = cgroups.get("")
    if unified and unified.endswith(suffix):
        base = f"{unified_mount()}{unified}"
        if not mem:  # the v2 memory controller (on a hybrid host, v1 has it)
            kills = _stat_value(_read(base + "/memory.events"), "oom_kill")
            if kills is not None:
                acct.oom_kills = kills
            peak_v2 = _read(base + "/memory.peak")
            if peak_v2:
                acct.memory_peak = int(peak_v2)
        usage = _stat_value(_read(base + "/cpu.stat"), "usage_usec")
        if usage is not None and acct.cpu_usec is None:
            acct.cpu_usec = usage
    return acct


def _procs_file(cgroups: dict[str, str], unit: str) -> Path | None:
    """``cgroup.procs`` of ``unit``'s cgroup, if ``cgroups`` has it in a hierarchy miniq reads."""
    for hierarchy, mount in (("", unified_mount()), ("name=systemd", Path("/sys/fs/cgroup/systemd"))):
        path = cgroups.get(hierarchy, "")
        if path.endswith("/" + unit):
            return mount / path.lstrip("/") / "cgroup.procs"
    return None


def pids(cgroups: dict[str, str], unit: str) -> list[int]:
    """The processes in ``unit``'s cgroup now (none if it cannot be read)."""
    where = _procs_file(cgroups, unit)
    procs = _read(where) if where is not None else None
    return [int(p) for p in procs.split()] if procs else []


def empty(cgroups: dict[str, str], unit: str) -> bool:
    """Whether ``unit``'s cgroup holds no process any more."""
    where = _procs_file(cgroups, unit)
    if where is None:
        return False
    procs = _read(where)
    return not procs or not procs.strip()


def holds_only(cgroups: dict[str, str], unit: str, pid: int) -> bool:
    """Whether ``unit``'s cgroup holds ``pid`` and no other process."""
    where = _procs_file(cgroups, unit)
    if where is None:
        return False
    procs = _read(where)
    return procs is not None and procs.split() == [str(pid)]


def placed(pid: int, unit: str) -> dict[str, str] | None:
    """The cgroups of ``pid`` (``paths``) once systemd has moved it into ``unit``; else None."""
    found = paths(pid)
    return found if any(found.get(h, "").endswith("/" + unit) for h in ("", "name=systemd")) else None


STOP_GRACE = 3.0  # seconds miniq gives a job's leftovers before SIGKILL


def scope_name(job_id: str) -> str:
    """The transient scope a job runs in (scope.py)."""
    return f"miniq-job-{job_id}.scope"


def find(unit: str) -> Path | None:
    """The cgroup directory of ``unit`` in the hierarchy that holds every
    process (cgroup v2, or systemd's own on a hybrid host), or None."""
    for top in (Path("/sys/fs/cgroup/systemd"), unified_mount()):
        if not (top / "cgroup.procs").exists():
            continue
        for dirpath, dirnames, _ in os.walk(top):
            if unit in dirnames:
                return Path(dirpath) / unit
            dirnames[:] = [d for d in dirnames if d.endswith((".slice", ".service"))]
        return None
    return None


def stop(unit: str, grace: float, poll: float = 0.05) -> bool:
    """Stop every process left in ``unit``'s cgroup: SIGTERM, then SIGKILL
    after ``grace`` seconds.  For a run whose processor died, without asking
    a manager (a user's ``miniq cancel`` may not reach it); systemd then
    collects the empty scope.  True once the cgroup is empty or gone; False
    if processes are left (not ours to signal, or unkillable for 5 s more).
    """
    where = find(unit)
    if where is None:
        return True
    kill_at = time.monotonic() + grace
    give_up = kill_at + 5.0
    while pids := [int(p) for p in (_read(where / "cgroup.procs") or "").split()]:
        now = time.monotonic()
        if now > give_up:
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL if now > kill_at else signal.SIGTERM)
            except ProcessLookupError:
                pass
            except PermissionError:
                return False
        time.sleep(poll)
    return True
