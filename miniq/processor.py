"""``miniq process``: claim queued jobs and run them until the queue is empty.

Contract with the units: the processor exits 0 once ``queue/`` is empty, and
every entry it claims leaves ``queue/`` for good (run, or recorded as failed
with a reason).  A job that fails never fails the service, and nothing stays
in the watched directory to re-trigger the path unit.

If systemd cannot be reached over D-Bus, jobs are not run unconfined behind
the user's back: each is recorded as not started, with the reason, unless the
installation set ``allow-unconfined = yes`` in ``[processor]`` of miniq.conf.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import journal
from .errors import MiniqError, SystemdUnavailable
from .job import Job, Outcome, State, hostname, now_iso
from .limits import Limits
from .queue import Claim, Queue, claimer_id
from .scope import PlainRunner, Running, ScopeRunner, StartFailed, unit_name
from .settings import Config, Manager

DRAIN_TIMEOUT = 5.0  # seconds to collect output after the scope is stopped


class Runner(Protocol):
    confined: bool

    def start(self, job_id: str, name: str, exe: str, argv: list[bytes], env: dict[str, str], cwd: str, limits: Limits) -> Running: ...
    def accounting(self, running: Running) -> dict[str, Any]: ...
    def stop(self, running: Running) -> None: ...


@dataclass
class Summary:
    """What one ``miniq process`` run did, by job id."""

    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


def describe(result: dict[str, Any]) -> str:
    """A one-line human account of a result."""
    outcome = result["outcome"]
    if outcome == Outcome.EXITED.value:
        text = f"exit code {result['exit_code']}"
    elif outcome == Outcome.SIGNALED.value:
        text = f"killed by {result['signal']}"
    elif outcome == Outcome.OOM.value:
        text = f"killed for exceeding its memory limit ({result['signal'] or 'exit code ' + str(result['exit_code'])})"
    elif outcome == Outcome.TIMEOUT.value:
        text = "stopped after its time limit"
    else:
        text = f"{outcome}: {result.get('reason')}"
    if "duration" in result:
        text += f" after {result['duration']:.3f} s"
    return text


class Processor:
    """Drains one queue root; see the module comment for the contract."""

    def __init__(self, queue: Queue, manager: Manager, runner: Runner | None = None, sink: journal.Sink | None = None) -> None:
        self.queue = queue
        self.manager = manager
        self.runner = runner
        self.unavailable: str | None = None
        self.sink = sink or journal.default_sink()
        self.claimer = claimer_id()

    def _setup(self) -> Config | str:
        try:
            config = Config.load(self.queue.root)
        except MiniqError as e:
            return f"miniq.conf is invalid: {e.message}"
        if self.runner is None:
            try:
                self.runner = ScopeRunner(self.manager)
            except SystemdUnavailable as e:
                if config.allow_unconfined:
                    self.log(f"warning: {e.message}; running jobs without scopes (allow-unconfined = yes)", journal.WARNING)
                    self.runner = PlainRunner()
                else:
                    self.unavailable = e.message
        return config

    def run(self) -> Summary:
        """Process until the queue is empty (see the module comment)."""
        self.queue.ensure_layout()
        config = self._setup()
        summary = Summary()
        try:
            summary.recovered = self.queue.recover(before_requeue=self._stop_leftover)
        except Exception as e:  # noqa: BLE001 - recovery must not keep the queue from draining
            self.log(f"recovering claims of dead processors failed: {e!r}", journal.ERR)
        for job_id in summary.recovered:
            self.log(f"job {job_id} was claimed by a processor that died; queued again", journal.WARNING, job_id)
        while (claim := self.queue.claim_next(self.claimer)) is not None:
            self.run_claim(claim, config, summary)
        return summary

    def _stop_leftover(self, job_id: str) -> None:
        if isinstance(self.runner, ScopeRunner):
            self.runner.stop_unit(unit_name(job_id))

    def log(self, message: str, priority: int = journal.INFO, job_id: str | None = None, **fields: str) -> None:
        extra = {"SYSLOG_IDENTIFIER": "miniq", **fields}
        if job_id:
            extra["MINIQ_JOB_ID"] = job_id
        self.sink.send(message.encode("utf-8", "backslashreplace"), priority, extra)

    # -- one job ------------------------------------------------------------

    def run_claim(self, claim: Claim, config: Config | str, summary: Summary) -> None:
        try:
            job = Job.from_json(json.loads(claim.data))
            if job.id != claim.id:
                raise ValueError(f"the file name {claim.queued_name!r} does not match its job id {job.id!r}")
        except (ValueError, UnicodeDecodeError) as e:
            reason = f"unusable job file: {e}"
            path = self.queue.reject(claim, reason)
            summary.rejected.append(path.stem)
            self.log(f"job file {claim.queued_name} rejected: {reason}; kept in {path}", journal.ERR, path.stem, MINIQ_EVENT="finished")
            return
        try:
            result = self.execute(job, config)
        except Exception as e:  # noqa: BLE001 - a bug must fail one job, never the service
            result = dict(self._not_started(f"internal error in miniq: {e!r}"), outcome=Outcome.ERROR.value)
        record = job.to_json()
        record["result"] = result
        ok = Outcome(result["outcome"]).succeeded(result.get("exit_code"))
        state = State.DONE if ok else State.FAILED
        record["state"] = state.label
        self.queue.finish(claim, record, state)
        (summary.succeeded if ok else summary.failed).append(job.id)
        self.log(
            f"job {job.id} ({job.name}) {'finished' if ok else 'failed'}: {describe(result)}",
            journal.INFO if ok else journal.ERR,
            job.id,
            MINIQ_JOB_NAME=job.name,
            MINIQ_EVENT="finished",
            MINIQ_OUTCOME=result["outcome"],
        )

    def _not_started(self, reason: str) -> dict[str, Any]:
        return {"outcome": Outcome.NOT_STARTED.value, "reason": reason, "host": hostname(), "ended": now_iso()}

    def execute(self, job: Job, config: Config | str) -> dict[str, Any]:
        """Run one job to its end and return its ``result`` record."""
        if isinstance(config, str):
            return self._not_started(config)
        if self.unavailable or self.runner is None:
            return self._not_started(
                f"{self.unavailable}; jobs are not run without a scope unless "
                f"allow-unconfined = yes is set in [processor] of {self.queue.root / 'miniq.conf'}"
            )
        try:
            exe = self.queue.job_type(job.name)
        except MiniqError as e:
            return self._not_started(e.message)
        limits = job.limits.over(config.limits_for(job.name))
        env = dict(os.environ, MINIQ_JOB_ID=job.id, MINIQ_JOB_NAME=job.name, MINIQ_ROOT=str(self.queue.root))
        started_iso = now_iso()
        try:
            running = self.runner.start(job.id, job.name, str(exe), job.argv_bytes(), env, str(self.queue.root), limits)
        except StartFailed as e:
            return self._not_started(str(e))
        self.log(
            f"job {job.id} ({job.name}) started" + (f" in {running.unit}" if running.unit else " without a scope"),
            journal.INFO,
            job.id,
            MINIQ_JOB_NAME=job.name,
            MINIQ_EVENT="started",
        )
        status, rusage = self._pump(job, running)
        duration = time.monotonic() - running.started
        acct = self.runner.accounting(running)
        self.runner.stop(running)
        self._drain(job, running)
        result: dict[str, Any] = {
            "outcome": Outcome.EXITED.value,
            "exit_code": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
            "signal": signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None,
            "started": started_iso,
            "ended": now_iso(),
            "duration": round(duration, 6),
            "host": hostname(),
            "pid": running.pid,
            "unit": running.unit,
            "confined": self.runner.confined,
            "limits": limits.to_json(),
            "cpu_usec": int((rusage.ru_utime + rusage.ru_stime) * 1_000_000),
            "max_rss": rusage.ru_maxrss * 1024,
        }
        result.update(acct)
        result["outcome"] = classify(result, limits, duration).value
        return result

    def _pump(self, job: Job, running: Running) -> tuple[int, Any]:
        """Forward output until the main process exits; return its wait status."""
        self._splitters = {
            fd: journal.LineSplitter(
                self.sink,
                journal.PRIORITY_OF_STREAM[stream],
                {"SYSLOG_IDENTIFIER": job.name, "MINIQ_JOB_ID": job.id, "MINIQ_JOB_NAME": job.name, "MINIQ_STREAM": stream},
            )
            for fd, stream in ((running.stdout, "stdout"), (running.stderr, "stderr"))
        }
        self._sel = selectors.DefaultSelector()
        for fd in self._splitters:
            self._sel.register(fd, selectors.EVENT_READ)
        pidfd = os.pidfd_open(running.pid)
        self._sel.register(pidfd, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in self._sel.select():
                    if key.fd == pidfd:
                        _, status, rusage = os.wait4(running.pid, 0)
                        return status, rusage
                    self._read(key.fd)
        finally:
            self._sel.unregister(pidfd)
            os.close(pidfd)

    def _read(self, fd: int) -> None:
        data = os.read(fd, 65536)
        if data:
            self._splitters[fd].feed(data)
        else:
            self._sel.unregister(fd)
            self._splitters[fd].close()
            os.close(fd)

    def _drain(self, job: Job, running: Running) -> None:
        """Collect output still in the pipes once the scope is stopped."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self._sel.get_map() and time.monotonic() < deadline:
            for key, _ in self._sel.select(timeout=max(0.0, deadline - time.monotonic())):
                self._read(key.fd)
        for key in list(self._sel.get_map().values()):  # a leftover that escaped the kill
            fd = key.fd
            self._sel.unregister(fd)
            self._splitters[fd].close()
            os.close(fd)
        self._sel.close()


def classify(result: dict[str, Any], limits: Limits, duration: float) -> Outcome:
    """Turn a wait status and the scope's accounting into an outcome."""
    if result["exit_code"] == 0:
        return Outcome.EXITED
    if result.get("oom_kills"):
        return Outcome.OOM
    if limits.timeout is not None and duration >= limits.timeout - 0.05:
        return Outcome.TIMEOUT
    return Outcome.SIGNALED if result["signal"] else Outcome.EXITED
