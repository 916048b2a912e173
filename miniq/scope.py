"""Starting a job's process, inside its own transient systemd scope.

``ScopeRunner.start`` forks the job's process, which waits on a pipe; asks
the manager over D-Bus (pystemd) for ``miniq-job-<id>.scope`` holding that
PID, with the job's limits; waits until /proc shows the PID inside the scope;
and only then lets the process exec the job.  So no instruction of a job ever
runs outside its scope.

A second process, the keeper (``sleep infinity``), joins the scope too.  It
keeps the scope's cgroups alive after the job's main process exits, so that
miniq can read what the kernel accounted (peak memory, CPU time, OOM kills)
before it stops the scope.  ``TasksMax=`` counts it: a job gets one task
fewer than the limit says.

Then ``stop`` reaps the keeper.  A scope the job left empty is stopped and
unloaded by systemd itself (the scope is transient with
``CollectMode=inactive-or-failed``).  If the job left processes behind,
``stop`` stops the scope (SIGTERM, then SIGKILL after ``STOP_GRACE``) and
returns only once systemd has unloaded it.  Either way no unit stays loaded,
whatever the result.

``PlainRunner`` runs jobs without a scope.  miniq uses it only where the
installation opted in (``allow-unconfined``) and systemd is unreachable, and
fast unit tests use it.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SystemdUnavailable
from .limits import Limits
from .settings import Manager

KEEPER = ("/bin/sleep", "infinity")
STOP_TIMEOUT_USEC = 10 * 1_000_000  # systemd's own SIGKILL after SIGTERM
STOP_GRACE = 3.0  # seconds miniq gives a job's leftovers before SIGKILL
PLACEMENT_TIMEOUT = 10.0  # seconds to wait for systemd to move the PID


class StartFailed(Exception):
    """The job could not be started; the message says why."""


@dataclass
class Running:
    """A started job process and what belongs to it."""

    pid: int
    stdout: int
    stderr: int
    unit: str | None = None
    keeper: int | None = None
    started: float = field(default_factory=time.monotonic)
    cgroups: dict[str, str] = field(default_factory=dict)


def unit_name(job_id: str) -> str:
    return f"miniq-job-{job_id}.scope"


def _spawn_gated(exe: str, argv: list[bytes], env: dict[str, str], cwd: str, nice: int | None) -> tuple[int, int, int, int, int]:
    """Fork a child that execs ``exe`` once released.

    Returns (pid, stdout_r, stderr_r, gate_w, report_r).  Writing a byte to
    ``gate_w`` releases the child; closing it unwritten makes the child exit
    127 without running anything.  ``report_r`` yields b"" when exec
    succeeded, or an error message.
    """
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    gate_r, gate_w = os.pipe()
    rep_r, rep_w = os.pipe()
    for fd in (out_r, err_r, gate_w, rep_r):
        os.set_inheritable(fd, False)
    pid = os.fork()
    if pid == 0:  # the child: keep this path short and free of surprises
        try:
            os.setsid()
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.set_inheritable(rep_w, False)
            os.chdir(cwd)
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            if os.read(gate_r, 1) != b"g":
                os._exit(127)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execve(exe, [os.fsencode(exe), *argv], env)
        except OSError as e:
            os.write(rep_w, f"{e.strerror or e} ({exe})".encode())
        except BaseException as e:  # noqa: BLE001 - report anything, never return
            os.write(rep_w, repr(e).encode())
        finally:
            os._exit(127)
    for fd in (out_w, err_w, gate_r, rep_w):
        os.close(fd)
    return pid, out_r, err_r, gate_w, rep_r


def _release(gate_w: int, rep_r: int, pid: int) -> None:
    """Let the gated child exec; raise StartFailed if exec failed."""
    try:
        os.write(gate_w, b"g")
    except BrokenPipeError:
        pass
    os.close(gate_w)
    with os.fdopen(rep_r, "rb") as rep:
        report = rep.read()
    if report:
        raise StartFailed(report.decode("utf-8", "replace"))


def _abort(gate_w: int, rep_r: int, *pids: int) -> str:
    """Kill gated children that must not run; return any error they reported."""
    os.close(gate_w)
    with os.fdopen(rep_r, "rb") as rep:
        report = rep.read().decode("utf-8", "replace")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    return report


def job_env(env: dict[str, str]) -> dict[str, str]:
    # The job's output goes through pipes, not a journal stream: a program
    # that sees JOURNAL_STREAM would bypass miniq and lose the job fields.
    return {k: v for k, v in env.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}


class PlainRunner:
    """Runs jobs as plain child processes (no scope, limits not applied)."""

    confined = False

    def start(self, job_id: str, name: str, exe: str, argv: list[bytes], env: dict[str, str], cwd: str, limits: Limits) -> Running:
        pid, out_r, err_r, gate_w, rep_r = _spawn_gated(exe, argv, job_env(env), cwd, limits.nice)
        try:
            _release(gate_w, rep_r, pid)
        except StartFailed:
            os.waitpid(pid, 0)
            os.close(out_r)
            os.close(err_r)
            raise
        return Running(pid=pid, stdout=out_r, stderr=err_r)

    def accounting(self, running: Running) -> dict[str, Any]:
        return {}

    def stop(self, running: Running) -> None:
        try:
            os.killpg(running.pid, signal.SIGKILL)  # leftovers of the job's session
        except (ProcessLookupError, PermissionError):
            pass


def _no_such_unit(e: BaseException) -> bool:
    """Whether a pystemd error means the unit is not loaded (any pystemd version)."""
    name = getattr(e, "err_name", b"") or b""
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return "NoSuchUnit" in type(e).__name__ or "NoSuchUnit" in name or "not loaded" in str(e)


def _cgroup_paths(pid: int) -> dict[str, str]:
    """The cgroup of ``pid`` in each hierarchy: {"memory": "/x.scope", "": ...}."""
    paths = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                paths[c] = path
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _unified_mount() -> Path:
    for candidate in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if (candidate / "cgroup.procs").exists():
            return candidate
    return Path("/sys/fs/cgroup")


class ScopeRunner:
    """Runs each job in its own transient scope of ``manager`` (see module comment)."""

    confined = True

    def __init__(self, manager: Manager) -> None:
        try:
            from pystemd.dbuslib import DBus
            from pystemd.systemd1 import Manager as SDManager
        except ImportError as e:
            raise SystemdUnavailable(f"pystemd is not installed: {e}", hint="pip install pystemd") from None
        self.manager_kind = manager
        try:
            self.bus = DBus(user_mode=manager is Manager.USER)
            self.bus.open()
            self.sd = SDManager(bus=self.bus)
            self.sd.load()
        except Exception as e:  # noqa: BLE001 - pystemd raises its own DBusError types
            where = "the user manager (is XDG_RUNTIME_DIR set?)" if manager is Manager.USER else "the system manager"
            raise SystemdUnavailable(f"cannot reach {where} over D-Bus: {e}") from None

    def properties(self, job_id: str, name: str, pids: list[int], limits: Limits) -> list[tuple[bytes, bytes, Any]]:
        props: list[tuple[bytes, bytes, Any]] = [
            (b"Description", b"s", f"miniq job {job_id} ({name})".encode()),
            (b"PIDs", b"au", pids),
            (b"CollectMode", b"s", b"inactive-or-failed"),
            (b"MemoryAccounting", b"b", True),
            (b"CPUAccounting", b"b", True),
            (b"TasksAccounting", b"b", True),
            (b"TimeoutStopUSec", b"t", STOP_TIMEOUT_USEC),
        ]
        if limits.memory_max is not None:
            props.append((b"MemoryMax", b"t", limits.memory_max))
        if limits.cpu_quota is not None:
            props.append((b"CPUQuotaPerSecUSec", b"t", limits.cpu_quota * 10_000))
        if limits.tasks_max is not None:
            props.append((b"TasksMax", b"t", limits.tasks_max))
        if limits.timeout is not None:
            props.append((b"RuntimeMaxUSec", b"t", int(limits.timeout * 1_000_000)))
        return props

    def start_transient(
        self,
        unit: str,
        props: list[tuple[bytes, bytes, Any]],
        mode: bytes = b"fail",
        aux: list[tuple[str, list[tuple[bytes, bytes, Any]]]] = (),  # type: ignore[assignment]
    ) -> None:
        """``StartTransientUnit`` with explicitly typed properties.

        pystemd's own wrapper looks signatures up in a table that lacks some
        properties (``PIDs`` in 0.15, more in Debian's 0.11), so the message
        is built here from (name, D-Bus signature, value) triples.
        """
        from pystemd.dbuslib import apply_signature

        def properties(props: list[tuple[bytes, bytes, Any]]) -> list[Any]:
            args: list[Any] = [(ord(b"a"), b"(sv)")]
            for name, signature, value in props:
                args += [(ord(b"r"), b"sv"), (ord(b"s"), name), (ord(b"v"), signature)]
                args += apply_signature(signature, [value])
                args += [(-1, None), (-1, None)]
            return [*args, (-1, None)]

        args = apply_signature(b"ss", [unit.encode(), mode]) + properties(props)
        args += [(ord(b"a"), b"(sa(sv))")]
        for aux_name, aux_props in aux:
            args += [(ord(b"r"), b"sa(sv)"), (ord(b"s"), aux_name.encode()), *properties(aux_props), (-1, None)]
        args += [(-1, None)]
        self.bus.call_method(
            b"org.freedesktop.systemd1", b"/org/freedesktop/systemd1", b"org.freedesktop.systemd1.Manager", b"StartTransientUnit", args
        )

    def start(self, job_id: str, name: str, exe: str, argv: list[bytes], env: dict[str, str], cwd: str, limits: Limits) -> Running:
        unit = unit_name(job_id)
        keeper = os.posix_spawn(KEEPER[0], list(KEEPER), {}, setsid=True)
        pid, out_r, err_r, gate_w, rep_r = _spawn_gated(exe, argv, job_env(env), cwd, limits.nice)
        try:
            self.start_transient(unit, self.properties(job_id, name, [pid, keeper], limits))
            self._wait_placed(unit, pid, keeper)
        except Exception as e:  # noqa: BLE001 - D-Bus errors, StartFailed: the job must not run
            report = _abort(gate_w, rep_r, pid, keeper)
            os.close(out_r)
            os.close(err_r)
            raise StartFailed(report or f"systemd refused the scope {unit}: {e}") from None
        running = Running(pid=pid, stdout=out_r, stderr=err_r, unit=unit, keeper=keeper, cgroups=_cgroup_paths(pid))
        try:
            _release(gate_w, rep_r, pid)
        except StartFailed:
            os.waitpid(pid, 0)
            self.stop(running)
            os.close(out_r)
            os.close(err_r)
            raise
        return running

    def _wait_placed(self, unit: str, *pids: int) -> None:
        # StartTransientUnit returns once the start job is queued; the PIDs
        # move when it runs.  /proc is the ground truth, and cheap to read.
        deadline = time.monotonic() + PLACEMENT_TIMEOUT
        pending = list(pids)
        while pending:
            paths = _cgroup_paths(pending[0])
            if any(paths.get(h, "").endswith("/" + unit) for h in ("", "name=systemd")):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise StartFailed(f"systemd did not move PID {pending[0]} into {unit} within {PLACEMENT_TIMEOUT:.0f} s")
            time.sleep(0.0005)

    def accounting(self, running: Running) -> dict[str, Any]:
        """What the kernel accounted for the scope; call while the keeper lives."""
        acct: dict[str, Any] = {}
        suffix = "/" + (running.unit or "")
        mem = running.cgroups.get("memory")
        if mem and mem.endswith(suffix):  # cgroup v1 memory controller
            base = Path("/sys/fs/cgroup/memory") / mem.lstrip("/")
            peak = _read(base / "memory.max_usage_in_bytes")
            if peak:
                acct["memory_peak"] = int(peak)
            for line in (_read(base / "memory.oom_control") or "").splitlines():
                if line.startswith("oom_kill "):
                    acct["oom_kills"] = int(line.split()[1])
        cpu = running.cgroups.get("cpuacct")
        if cpu and cpu.endswith(suffix):
            usage = _read(Path("/sys/fs/cgroup/cpuacct") / cpu.lstrip("/") / "cpuacct.usage")
            if usage:
                acct["cpu_usec"] = int(usage) // 1000
        unified = running.cgroups.get("")
        if unified and unified.endswith(suffix):
            base = _unified_mount() / unified.lstrip("/")
            for line in (_read(base / "memory.events") or "").splitlines():
                if line.startswith("oom_kill "):
                    acct["oom_kills"] = int(line.split()[1])
            peak = _read(base / "memory.peak")
            if peak:
                acct["memory_peak"] = int(peak)
            for line in (_read(base / "cpu.stat") or "").splitlines():
                if line.startswith("usage_usec ") and "cpu_usec" not in acct:
                    acct["cpu_usec"] = int(line.split()[1])
        return acct

    def stop(self, running: Running) -> None:
        """Reap the keeper; stop the scope if the job left processes in it."""
        if running.keeper is not None:
            try:
                os.kill(running.keeper, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(running.keeper, 0)
            running.keeper = None
        # A scope without processes is stopped and unloaded by systemd itself
        # (CollectMode=inactive-or-failed); only leftovers need a StopUnit,
        # which costs a few milliseconds per job.
        if running.unit and not self._empty(running):
            self.stop_unit(running.unit)

    def _empty(self, running: Running) -> bool:
        for hierarchy, mount in (("", _unified_mount()), ("name=systemd", Path("/sys/fs/cgroup/systemd"))):
            path = running.cgroups.get(hierarchy, "")
            if path.endswith("/" + (running.unit or "")):
                procs = _read(mount / path.lstrip("/") / "cgroup.procs")
                return not procs or not procs.strip()
        return False

    def stop_unit(self, unit: str) -> None:
        """Stop a job's scope: SIGTERM to what is left, SIGKILL after a grace period.

        Returns once systemd has unloaded the unit, so no scope outlives its
        job's record, even when leftovers ignore SIGTERM or keep forking.
        """
        try:
            self.sd.Manager.StopUnit(unit.encode(), b"replace")
        except Exception as e:  # noqa: BLE001 - pystemd's D-Bus errors
            if _no_such_unit(e):
                return  # it ended with its last process, as it should
            raise
        if self._wait_gone(unit, STOP_GRACE):
            return
        try:
            self.sd.Manager.KillUnit(unit.encode(), b"all", signal.SIGKILL)
        except Exception as e:  # noqa: BLE001
            if _no_such_unit(e):
                return
            raise
        if not self._wait_gone(unit, PLACEMENT_TIMEOUT):
            raise RuntimeError(f"{unit} is still loaded after SIGKILL")

    def _wait_gone(self, unit: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.sd.Manager.GetUnit(unit.encode())
            except Exception as e:  # noqa: BLE001
                if _no_such_unit(e):
                    return True
                raise
            time.sleep(0.002)
        return False
