"""What the kernel accounted for a job's scope, read from its cgroups.

Read while miniq's keeper process still holds the scope (scope.py): peak
memory, CPU time and OOM kills, from the cgroup v1 controllers of a hybrid
host or from cgroup v2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def paths(pid: int) -> dict[str, str]:
    """The cgroup of ``pid`` in each hierarchy: {"memory": "/x.scope", "": ...}."""
    found = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                found[c] = path
    return found


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def unified_mount() -> Path:
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.procs").exists():
            return candidate
    return Path("/sys/fs/cgroup")


def _stat_value(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        if line.startswith(key + " "):
            return int(line.split()[1])
    return None


@dataclass
class Accounting:
    """What the kernel accounted for a scope; None where it could not say."""

    cpu_usec: int | None = None
    memory_peak: int | None = None
    oom_kills: int | None = None


def accounting(cgroups: dict[str, str], unit: str) -> Accounting:
    """Peak memory, CPU time and OOM kills of ``unit``'s cgroups."""
    acct = Accounting()
    suffix = "/" + unit
    mem = cgroups.get("memory")
    if mem and mem.endswith(suffix):  # cgroup v1 memory controller
        base = Path("/sys/fs/cgroup/memory") / mem.lstrip("/")
        peak = _read(base / "memory.max_usage_in_bytes")
        if peak:
            acct.memory_peak = int(peak)
        kills = _stat_value(_read(base / "memory.oom_control"), "oom_kill")
        if kills is not None:
            acct.oom_kills = kills
    cpu = cgroups.get("cpuacct")
    if cpu and cpu.endswith(suffix):
        nanoseconds = _read(Path("/sys/fs/cgroup/cpuacct") / cpu.lstrip("/") / "cpuacct.usage")
        if nanoseconds:
            acct.cpu_usec = int(nanoseconds) // 1000
    unified = cgroups.get("")
    if unified and unified.endswith(suffix):
        base = unified_mount() / unified.lstrip("/")
        kills = _stat_value(_read(base / "memory.events"), "oom_kill")
        if kills is not None:
            acct.oom_kills = kills
        peak_v2 = _read(base / "memory.peak")
        if peak_v2:
            acct.memory_peak = int(peak_v2)
        usage = _stat_value(_read(base / "cpu.stat"), "usage_usec")
        if usage is not None and acct.cpu_usec is None:
            acct.cpu_usec = usage
    return acct


def empty(cgroups: dict[str, str], unit: str) -> bool:
    """Whether ``unit``'s cgroup holds no process any more."""
    for hierarchy, mount in (("", unified_mount()), ("name=systemd", Path("/sys/fs/cgroup/systemd"))):
        path = cgroups.get(hierarchy, "")
        if path.endswith("/" + unit):
            procs = _read(mount / path.lstrip("/") / "cgroup.procs")
            return not procs or not procs.strip()
    return False


def placed(pid: int, unit: str) -> bool:
    """Whether systemd has moved ``pid`` into ``unit``."""
    found = paths(pid)
    return any(found.get(h, "").endswith("/" + unit) for h in ("", "name=systemd"))
