"""Running one claimed job to its end: start it, pass its output on, classify its end.

A ``Worker`` owns one runner (one D-Bus connection).  While a job runs, the
worker renews the claim's lease when due, acts on a cancel request
(``cancel/ID``, looked for four times a second), and stops the job's scope if
the lease was lost: another processor has taken the job over, and this run
must not go on beside it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from ..core import files
from ..core.cgroup import scope_name
from ..core.job import Job, hostname
from ..core.limits import Limits
from ..core.result import Cause, Outcome, Result
from ..core.timeparse import now_iso
from ..core.users import Identity
from ..store.claims import Claim
from ..systemd import journal
from .output import Budget, OutputPump
from .runner import Runner, Running
from .spawn import ExecSpec, StartDelayed, StartFailed, clean_environment

Log = Callable[..., None]


def classify(exit_code: int | None, sig: str | None, limits: Limits, duration: float, cancelled: bool, oom_kills: int) -> Outcome:
    """Turn a wait status and the scope's accounting into an outcome."""
    if exit_code == 0:
        return Outcome.EXITED
    if cancelled:
        return Outcome.CANCELLED
    if oom_kills:
        return Outcome.OOM
    if limits.timeout is not None and duration >= limits.timeout - 0.05:
        return Outcome.TIMEOUT
    return Outcome.SIGNALED if sig else Outcome.EXITED


class Stop:
    """Why a running job was stopped early, if it was."""

    __slots__ = ("cancelled", "interrupted", "killed", "lost", "terminated")

    def __init__(self) -> None:
        self.cancelled = False
        self.lost = False
        self.interrupted = False  # the processor itself is being stopped
        #: Its time limit: SIGTERM sent (and then SIGKILL after its stop timeout).
        self.terminated = False
        self.killed = False


class Worker:
    """Runs jobs of one queue, one at a time, with its own runner."""

    def __init__(
        self, claim_lease: float, runner: Runner, sink: journal.Sink, log: Log, output_limit: tuple[int, float] | None,
        heartbeat: Callable[[], None], stopping: Callable[[], bool], shared_budget: Budget | None = None,
    ) -> None:  # fmt: skip
        self.lease, self.runner, self.sink, self.log = claim_lease, runner, sink, log
        #: Each job's output budget (output.py); in a user manager also one shared by all.
        self.output_limit, self.shared_budget = output_limit, shared_budget
        self.heartbeat, self.stopping = heartbeat, stopping

    def spec(self, claim: Claim, job: Job, limits: Limits, identity: Identity | None) -> ExecSpec:
        """What to run for ``job``, which the run gate let start with ``limits`` (policy.py)."""
        layout = claim.layout
        exe = layout.job_type(job.name)
        extra = {
            "MINIQ_JOB_ID": job.id,
            "MINIQ_JOB_NAME": job.name,
            "MINIQ_ROOT": str(layout.root),
            "MINIQ_ATTEMPT": str(len(job.attempts) + 1),
        }
        if job.follows is not None:
            extra.update(
                MINIQ_FOLLOWS_ID=job.follows.id, MINIQ_FOLLOWS_NAME=job.follows.name,
                MINIQ_FOLLOWS_OUTCOME=job.follows.outcome, MINIQ_FOLLOWS_STATUS=str(job.follows.status),
            )  # fmt: skip
        cwd = str(layout.root) if identity is None else (identity.home if os.path.isdir(identity.home) else "/")
        return ExecSpec(
            exe=str(exe),
            argv=tuple(job.argv_bytes()),
            env=clean_environment(identity, extra),
            cwd=cwd,
            limits=limits,
            identity=identity,
            unit=scope_name(job.id),
            description=f"miniq job {job.id} ({job.name})",
        )

    def execute(self, claim: Claim, job: Job, spec: ExecSpec, uid: int | None) -> Result:
        """Run one job to its end and return its result (``claim.lost`` tells
        whether another processor took it over meanwhile)."""
        started_iso = now_iso()
        try:
            running = self.runner.start(spec)
        except StartDelayed as e:
            # A busy systemd, not the job: it goes back and runs later (the
            # processor's policy for interrupted runs, with its backoff and cap).
            return Result.unrun(Outcome.INTERRUPTED, f"its scope was not ready in time: {e}", hostname(), cause=Cause.DELAYED.value)
        except StartFailed as e:
            return Result.unrun(Outcome.NOT_STARTED, str(e), hostname())
        where = f" in {running.unit}" if running.unit else " without a scope"
        self.log(f"job {job.id} ({job.name}) started{where}", journal.INFO, job, uid, MINIQ_EVENT="started")
        fields = {"SYSLOG_IDENTIFIER": job.name, "MINIQ_JOB_ID": job.id, "MINIQ_JOB_NAME": job.name}
        pump = OutputPump(self.sink, fields, running, Budget(self.output_limit, self.shared_budget), uid)
        stop = Stop()
        status, rusage, _ = pump.until_exit(running.pid, lambda: self._tick(claim, job, running, stop, uid, spec.limits))
        duration = time.monotonic() - running.started
        acct = self.runner.accounting(running)
        self.runner.stop(running)
        pump.drain()
        exit_code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None
        sig = signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None
        outcome = classify(exit_code, sig, spec.limits, duration, stop.cancelled, acct.oom_kills or 0)
        # Stopped with its processor (a service stop, a shutdown): whoever's
        # signal got there first, the run was interrupted, not failed.
        if (stop.interrupted or (self.stopping() and sig is not None)) and not stop.cancelled and outcome is not Outcome.EXITED:
            outcome, stop.interrupted = Outcome.INTERRUPTED, True
        return Result(
            outcome, exit_code=exit_code, signal=sig, started=started_iso, ended=now_iso(), duration=round(duration, 6),
            host=hostname(), pid=running.pid, unit=running.unit, confined=self.runner.confined, limits=spec.limits.to_json(),
            cpu_usec=acct.cpu_usec if acct.cpu_usec is not None else int((rusage.ru_utime + rusage.ru_stime) * 1e6),
            memory_peak=acct.memory_peak,
            oom_kills=acct.oom_kills, output_lines=pump.lines,
            output_dropped=pump.dropped or None,
            reason="cancelled" if stop.cancelled else "its processor was stopped" if stop.interrupted else None,
            cause=Cause.STOPPED.value if outcome is Outcome.INTERRUPTED else None,
        )  # fmt: skip

    def _tick(self, claim: Claim, job: Job, running: Running, stop: Stop, uid: int | None, limits: Limits) -> bool:
        """Four times a second while a job runs: renew, enforce its time limit,
        and stop it if it was taken over, cancelled, or its processor is being stopped."""
        self.heartbeat()
        if limits.timeout is not None:
            self._time_limit(job, running, stop, uid, limits)
        if not claim.renew_if_due(self.lease):
            stop.lost = True
            self.log(f"job {job.id} ({job.name}) was taken over by another processor: stopping this run", journal.WARNING, job, uid)
        elif self._cancel_requested(claim):
            stop.cancelled = True
            self.log(f"job {job.id} ({job.name}) cancel requested: stopping it", journal.NOTICE, job, uid)
        elif self.stopping():
            stop.interrupted = True
            self.log(f"job {job.id} ({job.name}) stopped: its processor is being stopped", journal.WARNING, job, uid)
        else:
            return False
        self.runner.stop(running)
        return True

    def _time_limit(self, job: Job, running: Running, stop: Stop, uid: int | None, limits: Limits) -> None:
        """At its time limit SIGTERM to the job's processes, SIGKILL after its
        stop timeout.  miniq does it, not systemd (whose ``RuntimeMaxSec=`` is
        a later backstop: limits.py), so that the scope and its accounting
        outlive the job until they are read: systemd's stop would kill the
        keeper too, and the cgroup could go first."""
        elapsed = time.monotonic() - running.started
        assert limits.timeout is not None
        if not stop.terminated and elapsed >= limits.timeout:
            stop.terminated = True
            self.log(f"job {job.id} ({job.name}) reached its time limit of {limits.timeout:g} s: SIGTERM", journal.NOTICE, job, uid)
            self.runner.signal(running, signal.SIGTERM)
        elif stop.terminated and not stop.killed and elapsed >= limits.timeout + limits.stop_grace:
            stop.killed = True
            self.log(f"job {job.id} ({job.name}) still runs {limits.stop_grace:g} s after SIGTERM: SIGKILL", journal.NOTICE, job, uid)
            self.runner.signal(running, signal.SIGKILL)

    @staticmethod
    def _cancel_requested(claim: Claim) -> bool:
        files.revalidate(claim.layout.cancel)  # a request made on another machine (NFS)
        return os.path.lexists(claim.layout.cancel_request(claim.id))
