"""``miniq process``: claim queued jobs and run them until the queue is empty.

Contract with the units: the processor exits 0 once ``queue/`` is empty, and
every entry it claims leaves ``queue/`` for good (run, retried later from
``delayed/``, or recorded as failed with a reason).  A job that fails never
fails the service, and nothing stays in the watched directory to re-trigger
the path unit.  Before claiming, and after every job, due entries of
``delayed/`` are promoted; before exiting, a transient timer is armed for the
earliest job still delayed (timer.py).

Up to ``parallel`` jobs (``[processor] parallel`` in miniq.conf, default 1)
run at once, each in its own scope, one worker thread each.  With 1, jobs
run strictly in queue order.

If systemd cannot be reached over D-Bus, jobs are not run unconfined behind
the user's back: each is recorded as not started, with the reason, unless the
installation set ``allow-unconfined = yes`` in ``[processor]`` of miniq.conf.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from . import journal
from .errors import MiniqError, SystemdUnavailable
from .job import Job, Outcome, Schedule, State, backoff, not_started
from .queue import Claim, Queue, claimer_id
from .scope import PlainRunner, ScopeRunner, unit_name
from .settings import Config, Manager
from .worker import Runner, Worker


@dataclass
class Summary:
    """What one ``miniq process`` run did, by job id."""

    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    wake_at: float | None = None


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
    elif outcome == Outcome.CANCELLED.value:
        text = "cancelled"
    else:
        text = f"{outcome}: {result.get('reason')}"
    if "duration" in result:
        text += f" after {result['duration']:.3f} s"
    return text


class Processor:
    """Drains one queue root; see the module comment for the contract.

    ``runner`` replaces the scope runner (tests use ``PlainRunner``);
    ``waker`` replaces the transient timer (called with the Unix time).
    """

    def __init__(
        self,
        queue: Queue,
        manager: Manager,
        runner: Runner | None = None,
        sink: journal.Sink | None = None,
        parallel: int | None = None,
        waker: Callable[[float], object] | None = None,
    ) -> None:
        self.queue = queue
        self.manager = manager
        self.runner = runner
        self.sink = sink or journal.default_sink()
        self.parallel = parallel
        self.waker = waker
        self.claimer = claimer_id()
        self.unavailable: str | None = None
        self.lock = threading.Lock()

    def log(self, message: str, priority: int = journal.INFO, job_id: str | None = None, **fields: str) -> None:
        extra = {"SYSLOG_IDENTIFIER": "miniq", **fields}
        if job_id:
            extra["MINIQ_JOB_ID"] = job_id
        self.sink.send(message.encode("utf-8", "backslashreplace"), priority, extra)

    def _runner(self, config: Config) -> Runner | None:
        """A runner for one worker, or None (and the reason) without systemd."""
        if self.runner is not None:
            return self.runner
        try:
            return ScopeRunner(self.manager)
        except SystemdUnavailable as e:
            if config.allow_unconfined:
                self.log(f"warning: {e.message}; running jobs without scopes (allow-unconfined = yes)", journal.WARNING)
                return PlainRunner()
            self.unavailable = e.message
            return None

    def run(self) -> Summary:
        """Process until the queue is empty (see the module comment)."""
        self.queue.ensure_layout()
        (self.queue.dir(State.QUEUED) / Queue.WAKE).unlink(missing_ok=True)
        summary = Summary()
        try:
            config: Config | str = Config.load(self.queue.root)
        except MiniqError as e:
            config = f"miniq.conf is invalid: {e.message}"
        runners = [self._runner(config if isinstance(config, Config) else Config())]
        try:
            summary.recovered = self.queue.recover(before_requeue=lambda job_id: self._stop_leftover(runners[0], job_id))
        except Exception as e:  # noqa: BLE001 - recovery must not keep the queue from draining
            self.log(f"recovering claims of dead processors failed: {e!r}", journal.ERR)
        for job_id in summary.recovered:
            self.log(f"job {job_id} was claimed by a processor that died; queued again", journal.WARNING, job_id)

        parallel = self.parallel or (config.parallel if isinstance(config, Config) else 1)
        if parallel > 1 and isinstance(config, Config) and runners[0] is not None:
            runners += [self._runner(config) for _ in range(parallel - 1)]
        threads = [threading.Thread(target=self._work, args=(r, config, summary), daemon=True) for r in runners[1:]]
        for t in threads:
            t.start()
        self._work(runners[0], config, summary)
        for t in threads:
            t.join()
        summary.wake_at = self.queue.promote(self.claimer)
        if summary.wake_at is not None:
            self._arm(runners[0], summary.wake_at)
        return summary

    def _stop_leftover(self, runner: Runner | None, job_id: str) -> None:
        if isinstance(runner, ScopeRunner):
            runner.stop_unit(unit_name(job_id))

    def _arm(self, runner: Runner | None, when: float) -> None:
        try:
            if self.waker is not None:
                self.waker(when)
            elif isinstance(runner, ScopeRunner):
                from .timer import arm

                arm(runner, when)
            else:
                return
            self.log(f"next delayed job due in {max(when - time.time(), 0):.1f} s; wake timer armed")
        except Exception as e:  # noqa: BLE001 - the minutely timer remains as a fallback
            self.log(f"could not arm the wake timer ({e!r}); the minutely timer will start delayed jobs", journal.WARNING)

    def _work(self, runner: Runner | None, config: Config | str, summary: Summary) -> None:
        worker = Worker(self.queue, runner, self.sink, self.log) if runner is not None else None
        while True:
            with self.lock:
                self.queue.promote(self.claimer)
                claim = self.queue.claim_next(self.claimer)
            if claim is None:
                return
            self.run_claim(claim, worker, config, summary)

    # -- one job ------------------------------------------------------------

    def run_claim(self, claim: Claim, worker: Worker | None, config: Config | str, summary: Summary) -> None:
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
            if isinstance(config, str):
                result = not_started(config)
            elif worker is None:
                result = not_started(
                    f"{self.unavailable}; jobs are not run without a scope unless "
                    f"allow-unconfined = yes is set in [processor] of {self.queue.root / 'miniq.conf'}"
                )
            else:
                result = worker.execute(job, job.limits.over(config.limits_for(job.name)))
        except Exception as e:  # noqa: BLE001 - a bug must fail one job, never the service
            result = not_started(f"internal error in miniq: {e!r}", Outcome.ERROR)
        self.conclude(claim, job, result, summary)

    def conclude(self, claim: Claim, job: Job, result: dict[str, Any], summary: Summary) -> None:
        """Record a run: done, failed, or back to ``delayed/`` for a retry."""
        attempts = (*job.attempts, result)
        outcome = Outcome(result["outcome"])
        ok = outcome.succeeded(result.get("exit_code"))
        # Interrupted runs (the processor died) do not use up retries.
        failures = sum(
            1 for a in attempts if a.get("outcome") != Outcome.INTERRUPTED.value and not (
                a.get("outcome") == Outcome.EXITED.value and a.get("exit_code") == 0)
        )  # fmt: skip
        if not ok and outcome not in (Outcome.CANCELLED, Outcome.REJECTED) and failures <= job.schedule.retries:
            delay = backoff(failures)
            s = job.schedule
            again = Job(job.id, job.name, job.argv, job.submitted, job.submitter, job.limits,
                        Schedule(s.priority, time.time() + delay, (), s.retries), attempts, job.extra)  # fmt: skip
            self.queue.postpone(claim, again)
            summary.retrying.append(job.id)
            self.log(
                f"job {job.id} ({job.name}) failed: {describe(result)}; attempt {failures + 1} of {s.retries + 1} in {delay:.0f} s",
                journal.WARNING,
                job.id,
                MINIQ_JOB_NAME=job.name,
                MINIQ_EVENT="retrying",
                MINIQ_OUTCOME=result["outcome"],
            )
            return
        state = State.DONE if ok else State.FAILED
        record = dict(job.to_json(), attempts=list(attempts), result=result, state=state.label)
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
