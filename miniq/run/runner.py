"""What starts a job's process: the ``Runner`` protocol, and ``PlainRunner``.

A runner turns an ``ExecSpec`` into a running process (``Running``), reports
what the kernel accounted when it ended, and cleans up after it.  The scope
runner (scope.py) is the real one; ``PlainRunner`` runs jobs as plain child
processes, without a scope and without limits: miniq uses it only where the
installation opted in (``allow-unconfined``) and systemd is unreachable, and
fast unit tests use it.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Protocol

from ..core.cgroup import Accounting
from .spawn import ExecSpec, release, spawn_gated


class Running:
    """A started job process and what belongs to it."""

    __slots__ = ("cgroups", "keeper", "pid", "started", "stderr", "stdout", "unit")

    def __init__(self, pid: int, stdout: int, stderr: int, unit: str | None = None, keeper: int | None = None) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.unit = unit
        self.keeper = keeper
        self.started = time.monotonic()
        self.cgroups: dict[str, str] = {}


class Runner(Protocol):
    confined: bool

    def start(self, spec: ExecSpec) -> Running: ...
    def accounting(self, running: Running) -> Accounting: ...
    def stop(self, running: Running) -> None: ...
    def signal(self, running: Running, sig: int) -> None: ...
    def idle(self) -> None: ...
    def close(self) -> None: ...


class PlainRunner:
    """Runs jobs as plain child processes (no scope, limits not applied)."""

    confined = False

    def start(self, spec: ExecSpec) -> Running:
        gated = spawn_gated(spec)
        release(gated)
        return Running(pid=gated.pid, stdout=gated.stdout, stderr=gated.stderr)

    def accounting(self, running: Running) -> Accounting:
        return Accounting()

    def stop(self, running: Running) -> None:
        try:
            os.killpg(running.pid, signal.SIGKILL)  # leftovers of the job's session
        except (ProcessLookupError, PermissionError):
            pass

    def signal(self, running: Running, sig: int) -> None:
        """Send ``sig`` to the job's session (its time limit: worker.py)."""
        try:
            os.killpg(running.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def idle(self) -> None:
        pass

    def close(self) -> None:
        pass
