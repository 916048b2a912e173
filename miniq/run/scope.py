"""Running a job in its own transient systemd scope, ``miniq-job-<id>.scope``.

``ScopeRunner.start`` forks the job's gated process (spawn.py), asks the
manager for the scope holding that PID with the job's limits, waits until
/proc shows the PID inside the scope, and only then lets the process exec.
No instruction of a job ever runs outside its scope.  The wait is an event:
systemd's ``JobRemoved`` signal for the scope's start job (systemd.py).  A
refused scope fails the job at once with systemd's reason.

A second process, the keeper, joins the scope.  It keeps the scope's
cgroups alive after the job's main process exits, so miniq can read what the
kernel accounted (cgroup.py) before the scope goes.  ``TasksMax=`` counts it:
a job gets one task fewer than the limit says.  One keeper serves a runner's
jobs one after another: when a job's scope holds nothing but the keeper any
more, the keeper stays there until the next job's scope is started with it
among its PIDs, and systemd collects the old scope once it is empty.  The
runner ends the keeper when the queue is empty (``idle``) and when it closes.
The keeper is ``cat`` reading a pipe that only this runner holds open for
writing, so it also ends when its processor dies, whatever kills it.

A scope is not bound to the processor's service: a processor that is
stopped stops its jobs itself and puts them back (processor.py), and one that
dies is restarted a second later and stops the leftover scopes of its jobs
while it recovers them (README, "When things go wrong").

``stop`` keeps the keeper for the next job if the job left nothing else in
its scope, which systemd then stops and unloads itself once the keeper has
moved on or ended (``CollectMode=inactive-or-failed``).  If the job left
processes behind, ``stop`` ends the keeper and stops the scope (SIGTERM, then
SIGKILL after ``STOP_GRACE``), and returns once systemd has unloaded it.
"""

from __future__ import annotations

import os
import signal
import time

from ..core import cgroup
from ..core.cgroup import STOP_GRACE
from ..core.manager import Manager
from ..systemd.dbus import NoAnswer, Property, Systemd, SystemdError
from .runner import Running
from .spawn import ExecSpec, StartDelayed, StartFailed, abort, release, spawn_gated

KEEPER = "/bin/cat"  # reads the runner's lifeline pipe; never gets a byte
PLACEMENT_TIMEOUT = 10.0  # seconds to wait for systemd to move the PID


class ScopeRunner:
    """Runs each job in its own transient scope of ``manager`` (module comment)."""

    confined = True

    def __init__(self, manager: Manager, systemd: Systemd | None = None, slice_: str | None = None) -> None:
        self.systemd = systemd or Systemd(manager)
        self.systemd.watch_jobs()
        self.slice = slice_
        #: The keeper between two jobs, still in the last job's scope (module comment).
        self.spare: int | None = None
        self._lifeline: tuple[int, int] | None = None  # (read, write): the keepers' stdin

    def properties(self, spec: ExecSpec, pids: list[int]) -> list[Property]:
        props: list[Property] = [
            (b"Description", b"s", spec.description.encode()),
            (b"PIDs", b"au", pids),
            (b"CollectMode", b"s", b"inactive-or-failed"),
            (b"MemoryAccounting", b"b", True),
            # CPUAccounting= is left to systemd's default: on cgroup v2 with a
            # kernel >= 4.15 it is on and free (cpu.stat needs no controller);
            # on a hybrid host it is off, and asking for it builds every scope
            # in the v1 cpu,cpuacct hierarchy too (PID 1 spent 4-16 ms of CPU
            # per job with it, 3-5 ms without, on this project's test hosts).
            # The CPU time miniq records then comes from cpu.stat (cgroup.py).
            (b"TasksAccounting", b"b", True),
            # After an OOM kill, systemd must not stop the scope itself: miniq
            # reads the kill from the scope's cgroup, then stops what is left.
            (b"OOMPolicy", b"s", b"continue"),
        ]
        if self.slice:
            props.append((b"Slice", b"s", self.slice.encode()))
        return props + spec.limits.properties()

    def start(self, spec: ExecSpec) -> Running:
        keeper = self._keeper()
        gated = spawn_gated(spec)
        pids = [gated.pid, keeper]  # _start_scope may replace an ended keeper
        try:
            job = self._start_scope(spec, pids)
            self.systemd.wait_job(job, PLACEMENT_TIMEOUT)
            cgroups = self._wait_placed(spec.unit, *pids)
        except StartDelayed as e:
            report = abort(gated, pids[-1])
            raise StartDelayed(report or str(e)) from None
        except (SystemdError, StartFailed) as e:
            report = abort(gated, pids[-1])
            if isinstance(e, NoAnswer) and not report:  # not refused, never answered: the job runs later
                raise StartDelayed(f"{e} (scope {spec.unit})") from None
            raise StartFailed(report or f"systemd refused the scope {spec.unit}: {e}") from None
        except BaseException:
            abort(gated, pids[-1])
            raise
        running = Running(pid=gated.pid, stdout=gated.stdout, stderr=gated.stderr, unit=spec.unit, keeper=pids[-1])
        running.cgroups = cgroups
        try:
            release(gated)
        except StartFailed:
            self.stop(running)
            raise
        return running

    def _keeper(self) -> int:
        """The spare keeper if it is still there, else a new one."""
        if self.spare is not None:
            keeper, self.spare = self.spare, None
            if _alive(keeper):
                return keeper
        if self._lifeline is None:
            self._lifeline = os.pipe()  # close-on-exec: no job inherits the write end
        actions = [
            (os.POSIX_SPAWN_DUP2, self._lifeline[0], 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
        return os.posix_spawn(KEEPER, [KEEPER], {}, file_actions=actions, setsid=True)

    def _start_scope(self, spec: ExecSpec, pids: list[int]) -> bytes:
        """Queue the scope's start job; returns its object path."""
        try:
            return self.systemd.start_transient(spec.unit, self.properties(spec, pids))
        except SystemdError as e:
            if not _alive(pids[-1]):
                # The keeper ended between two jobs (someone stopped the last
                # job's scope, or killed it): the job is not to blame.
                pids[-1] = self._keeper()
                return self.systemd.start_transient(spec.unit, self.properties(spec, pids))
            if "already exists" not in e.message and "UnitExists" not in e.message:
                raise
            # A scope of a lost run of this job on this host: stop it, then retry.
            self.stop_leftover_unit(spec.unit)
            return self.systemd.start_transient(spec.unit, self.properties(spec, pids))

    def _wait_placed(self, unit: str, job: int, *more: int) -> dict[str, str]:
        """The cgroups of ``job`` once it and ``more`` are in ``unit``.

        StartTransientUnit returns once the start job is queued; the PIDs
        move when it runs, which systemd signals (``wait_job``).  /proc is
        the ground truth, cheap to read, and polled only if the signal did
        not come (pystemd without signal matches)."""
        deadline = time.monotonic() + PLACEMENT_TIMEOUT
        cgroups = _placed_by(deadline, unit, job)
        for pid in more:
            _placed_by(deadline, unit, pid)
        return cgroups

    def accounting(self, running: Running) -> cgroup.Accounting:
        """What the kernel accounted for the scope; call while the keeper lives."""
        return cgroup.accounting(running.cgroups, running.unit or "")

    def stop(self, running: Running) -> None:
        """Keep the keeper for the next job if the job left nothing else in
        its scope; else end it and stop the scope (module comment)."""
        keeper, running.keeper = running.keeper, None
        if keeper is not None and running.unit and cgroup.holds_only(running.cgroups, running.unit, keeper):
            self._end(self.spare)
            self.spare = keeper
            return
        self._end(keeper)
        # A scope without processes is stopped and unloaded by systemd itself
        # (CollectMode=inactive-or-failed); only leftovers need a StopUnit,
        # which costs a few milliseconds per job.
        if running.unit and not cgroup.empty(running.cgroups, running.unit):
            self.stop_leftover_unit(running.unit)

    def signal(self, running: Running, sig: int) -> None:
        """Send ``sig`` to every process of the job's scope but the keeper, so
        that the scope outlives the job until its accounting is read (its time
        limit, which miniq enforces itself: worker.py)."""
        for pid in cgroup.pids(running.cgroups, running.unit or ""):
            if pid != running.keeper:
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass

    def idle(self) -> None:
        """No job to run now: end the spare keeper, so that systemd collects
        the last job's scope instead of keeping it while the queue is empty."""
        spare, self.spare = self.spare, None
        self._end(spare)

    @staticmethod
    def _end(keeper: int | None) -> None:
        if keeper is None:
            return
        try:
            os.kill(keeper, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(keeper, 0)
        except ChildProcessError:
            pass

    def stop_leftover_unit(self, unit: str) -> bool:
        """Stop a scope: SIGTERM to what is left, SIGKILL after a grace period.

        Returns once systemd has unloaded the unit (True), or at once if it
        was not loaded (False), so no scope outlives its job's record.
        """
        stop_job = self.systemd.stop_unit(unit)
        if stop_job is None:
            return False
        if self.systemd.wait_unloaded(unit, STOP_GRACE, stop_job):
            return True
        self.systemd.kill_unit(unit, signal.SIGKILL)
        if not self.systemd.wait_unloaded(unit, PLACEMENT_TIMEOUT):
            raise SystemdError(f"{unit} is still loaded after SIGKILL")
        return True

    def close(self) -> None:
        self.idle()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
            self._lifeline = None
        self.systemd.close()


def _placed_by(deadline: float, unit: str, pid: int) -> dict[str, str]:
    """The cgroups of ``pid`` once /proc shows it in ``unit``; ``StartDelayed``
    if it is not there by ``deadline``."""
    while (cgroups := cgroup.placed(pid, unit)) is None:
        if time.monotonic() > deadline:
            raise StartDelayed(f"systemd did not move PID {pid} into {unit} within {PLACEMENT_TIMEOUT:.0f} s")
        time.sleep(0.0005)
    return cgroups


def _alive(pid: int) -> bool:
    """Whether our child ``pid`` has not ended (an ended one is reaped)."""
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False
