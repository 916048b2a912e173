"""``miniq process``: claim queued jobs and run them until the queue is empty.

Contract with the units: the processor exits 0 once ``queue/`` is empty (after
waiting ``linger`` seconds for more), and every entry it claims leaves
``queue/`` for good: run, retried later from ``delayed/``, or recorded as
failed with a reason.  A job that fails never fails the service, one
unusable entry never stops the others, and nothing stays in the watched
directory to re-trigger the path unit.

Before claiming, due entries of ``delayed/`` are promoted and claims whose
holder is gone are recovered (claims.py): the job goes back to ``delayed/``
for a short backoff, so the jobs behind it run first, and after
``max-interruptions`` such runs it is failed with the reason.  Before exiting,
a transient timer is armed for the earliest job still delayed (wake.py).

Up to ``parallel`` jobs run at once, each in its own scope.  With 1, jobs run
in this process strictly in queue order; with more, this process forks one
worker process per slot and supervises them (a worker that dies or hangs is
killed and its job recovered).

If systemd cannot be reached over D-Bus, jobs are not run unconfined behind
the user's back: each is recorded as not started, with the reason, unless the
installation set ``allow-unconfined = yes`` in ``[processor]`` of miniq.conf.
"""

from __future__ import annotations

import errno
import math
import os
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from ..core import files, notify
from ..core.errors import MiniqError, SystemdUnavailable
from ..core.job import Job, hostname
from ..core.manager import Manager
from ..core.proc import Claimer
from ..core.result import Outcome, Result
from ..core.schedule import Schedule, backoff
from ..core.summary import Summary
from ..core.users import identity_for
from ..store.claims import Claim, LeaseLost, clean_rejected, clean_tmp, stale_claims, take_over
from ..store.clock import ServerClock
from ..store.config import Config
from ..store.layout import parse_queue_name
from ..store.pending import Pending
from ..store.policy import Owner, at_start
from ..store.queue import Queue
from ..store.slots import Slot
from ..systemd import journal
from .output import Budget
from .promote import promote
from .runner import PlainRunner, Runner

#: Errors writing a record that pass: a full disk, a quota, a failing device or server.
TRANSIENT = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT)
RETRY_RECORD_MAX = 30.0  # seconds between attempts to record a result on a full disk


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
        linger: float | None = None,
        max_jobs: int | None = None,
    ) -> None:
        self.queue, self.layout, self.manager = queue, queue.layout, manager
        self.runner_override = runner
        self.sink = sink or journal.default_sink()
        self.parallel, self.waker, self.linger = parallel, waker, linger
        #: Claim at most this many jobs (each worker process its share), then stop.
        self.max_jobs = max_jobs
        self.taken = 0
        self.me = Claimer.current()
        self.config = Config()
        self.config_error: str | None = None
        self.config_stamp: tuple[float, int] | None = None
        self.unavailable: str | None = None
        self.heartbeat: Callable[[], None] = notify.alive
        #: A worker process tells its supervisor when it is busy and when idle (supervisor.py).
        self.state: Callable[[bool], None] = lambda busy: None
        #: A worker process waits for jobs until its supervisor closes this pipe (supervisor.py).
        self.lifeline: int | None = None
        #: Set by SIGTERM/SIGINT: finish or put back what runs, claim nothing new.
        self.stopping = False
        #: Records published so far: a job others run --after may have ended.
        self.finished = 0

    # -- logging ------------------------------------------------------------

    def log(self, message: str, priority: int = journal.INFO, job: Job | None = None, uid: int | None = None, **fields: str) -> None:
        extra = {"SYSLOG_IDENTIFIER": "miniq", **fields}
        if job is not None:
            extra.update(MINIQ_JOB_ID=job.id, MINIQ_JOB_NAME=job.name)
        self.sink.send(message.encode("utf-8", "backslashreplace"), priority, extra, uid)

    # -- the run ------------------------------------------------------------

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def run(self) -> Summary:
        """Process until the queue is empty (see the module comment)."""
        preload()
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
        except ValueError:
            pass  # not the main thread (an embedding program, a test): it stops by its own means
        self.queue.ensure_layout()
        self._load_config()
        summary = Summary()
        clock = ServerClock(self.layout, self.me.name)
        clean_tmp(self.layout, self.me, clock.now)
        for name in clean_rejected(self.layout, self.config.rejected_retention, clock.now):
            self.log(f"rejected/{name} removed: kept longer than rejected-retention ({self.config.rejected_retention:g} s)")
        self.layout.wake.unlink(missing_ok=True)
        parallel = self.parallel or self.config.parallel
        linger = self.config.linger if self.linger is None else self.linger
        while True:
            if parallel == 1:
                runner = self.make_runner()
                try:
                    self.recover(summary)
                    self.work(runner, summary, linger)
                finally:
                    if runner:
                        runner.close()
            else:
                from .supervisor import supervise

                self.recover(summary)
                supervise(self, parallel, linger, summary)
            pending = Pending(self.layout, watch=False)
            try:
                summary.wake_at = promote(self, pending, summary)
                pending.relist()
                if not pending.queue or self.stopping or self.max_jobs is not None:
                    break  # else: jobs became due meanwhile; run them too
            finally:
                pending.close()
        if summary.wake_at is not None and not self._arm(summary.wake_at) and not self.stopping and self.max_jobs is None:
            return self._stay_until(summary.wake_at, summary)
        ServerClock(self.layout, self.me.name).close()
        self._write_metrics()
        return summary

    def _stay_until(self, when: float, summary: Summary) -> Summary:
        """No timer will wake a processor for the job due at ``when`` (and none
        runs every minute): this one stays until it is due, and runs it."""
        while time.time() < when and not self.stopping:
            self.heartbeat()
            time.sleep(min(1.0, max(when - time.time(), 0)))
        if self.stopping:
            return summary
        later = self.run()
        later.merge(summary.to_json())
        return later

    def _write_metrics(self) -> None:
        """Refresh ``[processor] prometheus-file`` at the end of every run (stats.py)."""
        if not self.config.prometheus_file:
            return
        from pathlib import Path

        from ..store.stats import collect, prometheus_text, write_textfile

        try:
            write_textfile(Path(self.config.prometheus_file), prometheus_text(collect(self.queue), str(self.layout.root)))
        except (OSError, MiniqError) as e:
            self.log(f"could not write the metrics to {self.config.prometheus_file}: {e}", journal.WARNING)

    def _load_config(self) -> None:
        try:
            self.config = Config.load(self.layout.root)
            self.config_error = None
        except MiniqError as e:
            self.config_error = f"miniq.conf is invalid: {e.message}"
            self.log(self.config_error, journal.ERR)
        self.config_stamp = files.stamp(self.layout.conf)

    def _reload_config(self) -> None:
        """Read miniq.conf again if it changed (a lingering processor lives on)."""
        if files.stamp(self.layout.conf) != self.config_stamp:
            self._load_config()

    def make_runner(self) -> Runner | None:
        """A runner for one worker, or None (``unavailable`` says why) without systemd."""
        if self.runner_override is not None:
            return self.runner_override
        try:
            from .scope import ScopeRunner

            return ScopeRunner(self.manager, slice_=self.config.slice)
        except SystemdUnavailable as e:
            if self.config.allow_unconfined:
                self.log(f"warning: {e.message}; running jobs without scopes (allow-unconfined = yes)", journal.WARNING)
                return PlainRunner()
            self.unavailable = e.message
            return None

    # -- claims whose holder is gone ------------------------------------------

    def recover(self, summary: Summary) -> None:
        """Take over every claim whose holder died or lost its lease (claims.py)."""
        clock = ServerClock(self.layout, self.me.name)
        try:
            for stale in list(stale_claims(self.layout, self.me, self.config.lease, clock)):
                try:
                    self._recover_one(stale, summary)
                except (OSError, MiniqError) as e:
                    self.log(f"recovering {stale.path.name} failed: {e}", journal.ERR)
        except OSError as e:
            self.log(f"recovering claims of lost processors failed: {e}", journal.ERR)

    def _recover_one(self, stale: Any, summary: Summary) -> None:
        claim = take_over(self.layout, stale, self.me)
        if claim is None:
            return
        if claim.job is None:
            self._reject(claim, summary)
            return
        job = claim.job
        summary.recovered.append(job.id)
        self._interrupted(claim, job, stale.why, summary)

    def _interrupted(self, claim: Claim, job: Job, why: str, summary: Summary) -> None:
        """The policy for a run cut short by its processor (README, "When
        things go wrong"): ``job`` already holds the interrupted attempt."""
        last = job.attempts[-1]
        if os.path.lexists(self.layout.cancel_request(job.id)):
            self.finish(claim, job, Result.unrun(Outcome.CANCELLED, f"cancelled; {why}", hostname()), summary)
        elif last.counts_as_interruption and job.interruptions >= self.config.max_interruptions:
            reason = (
                f"its run was interrupted {job.interruptions} times by its processor's death (last: {why}); "
                f"not run again (max-interruptions = {self.config.max_interruptions} in [processor] of miniq.conf)"
            )
            # The last interrupted attempt is the job's result: N runs, N attempts.
            self.finish(claim, job.but(attempts=job.attempts[:-1]), last.but(reason=reason), summary)
        elif last.counts_as_lost and job.lost_runs >= self.config.max_lost_runs:
            reason = (
                f"{job.lost_runs} of its runs were lost with their machine or scope (last: {why}); "
                f"not run again (max-lost-runs = {self.config.max_lost_runs} in [processor] of miniq.conf)"
            )
            self.finish(claim, job.but(attempts=job.attempts[:-1]), last.but(reason=reason), summary)
        else:
            # A job that may have killed its processor waits longer each time; a
            # run lost with its machine, or stopped with its processor, goes again soon.
            delay = backoff(job.interruptions if last.counts_as_interruption else 1)
            self._persist(claim, lambda: claim.postpone(job, time.time() + delay))
            self.log(f"job {job.id} ({job.name}) was interrupted ({why}); runs again in {delay:.0f} s", journal.WARNING, job,
                     self._uid(claim), MINIQ_EVENT="recovered")  # fmt: skip

    # -- working --------------------------------------------------------------

    def work(self, runner: Runner | None, summary: Summary, linger: float) -> None:
        """Claim and run jobs until the queue stays empty for ``linger`` seconds."""
        from .worker import Worker

        pending = Pending(self.layout)
        limit = self.config.output_rate_limit
        # journald limits a user manager's services together (output.py).
        shared = Budget(limit) if self.manager is Manager.USER else None
        worker = (
            Worker(self.config.lease, runner, self.sink, self.log, limit, self.heartbeat, lambda: self.stopping, shared) if runner else None
        )
        last_recovery = time.monotonic()
        try:
            pending.list_delayed()
            while not self.stopping:
                self.heartbeat()
                self._reload_config()
                promote(self, pending, summary)
                if time.monotonic() - last_recovery > self.config.lease / 4:
                    self.recover(summary)
                    last_recovery = time.monotonic()
                if self.max_jobs is not None and self.taken >= self.max_jobs:
                    return
                path = pending.next()
                if path is None:
                    if runner is not None:
                        runner.idle()  # scope.py: the last job's scope goes now
                    if self._idle(pending, linger):
                        continue
                    return
                parsed = parse_queue_name(path.name)
                claim = Claim.take(self.layout, path, self.me, parsed[1] if parsed else None)
                if claim is not None:
                    self.taken += 1
                    self.state(True)
                    self.run_claim(claim, worker, summary)
        finally:
            pending.close()

    def _idle(self, pending: Pending, linger: float) -> bool:
        """Wait for a job; True if one may have come.  A processor waits up to
        ``linger`` seconds; a worker process until its supervisor closes its
        lifeline (supervisor.py), looking again at held jobs every
        ``HELD_CHECK`` seconds, since a slot freed elsewhere sends no event."""
        from .promote import HELD_CHECK

        self.state(False)
        worker = self.lifeline is not None
        deadline = time.monotonic() + (HELD_CHECK if pending.held else math.inf) if worker else time.monotonic() + linger
        earliest = pending.earliest()
        if earliest is not None and (worker or earliest - time.time() < linger):
            deadline = min(deadline, time.monotonic() + max(earliest - time.time(), 0))
        while time.monotonic() < deadline and not self.stopping:
            self.heartbeat()
            fd = pending.fileno()
            timeout = min(1.0, max(deadline - time.monotonic(), 0))
            if fd is not None:
                ready, _, _ = select.select([fd] if self.lifeline is None else [fd, self.lifeline], [], [], timeout)
                if fd in ready:
                    return True
                if ready:
                    return False  # the lifeline closed: every slot is idle; the supervisor ends the workers
            else:
                time.sleep(timeout)
                return True
        return worker and not self.stopping or earliest is not None and earliest <= time.time()

    def run_claim(self, claim: Claim, worker: Any, summary: Summary) -> None:
        """Run one claimed entry and record what became of it."""
        if claim.job is None:
            self._reject(claim, summary)
            return
        job = claim.job
        slot = self._admit(claim, job, summary)
        if slot is False:
            return
        try:
            self._run_admitted(claim, job, worker, summary)
        finally:
            if isinstance(slot, Slot):
                slot.release()

    def _admit(self, claim: Claim, job: Job, summary: Summary) -> Slot | None | bool:
        """Whether ``job`` may start now: False if it was held (its type is
        paused or at its cap, pause.py and slots.py); else the slot it holds, if
        its type has a cap."""
        from ..store import slots
        from ..store.layout import HELD
        from ..store.pause import is_paused, paused_names

        paused = paused_names(self.layout)
        if is_paused(paused, job.name):
            why = "its job type is paused" if job.name in paused else "the queue is paused"
        else:
            cap = self.config.type_parallel.get(job.name)
            if cap is None:
                return None
            slot = slots.take(self.layout, job.name, cap, claim.id, self.me.name)
            if slot is not None:
                return slot
            why = f"{cap} job(s) of type {job.name} already run ([job:{job.name}] parallel = {cap})"
        if self._persist(claim, lambda: claim.postpone(job, HELD)):
            summary.held.append(job.id)
            self.log(f"job {job.id} ({job.name}) held: {why}", journal.INFO, job, self._uid(claim), MINIQ_EVENT="held")
        return False

    def _run_admitted(self, claim: Claim, job: Job, worker: Any, summary: Summary) -> None:
        try:
            result = self._execute(claim, job, worker)
        except Exception as e:  # noqa: BLE001 - a bug must fail one job, never the service
            result = Result.unrun(Outcome.ERROR, f"internal error in miniq: {e!r}", hostname())
        if claim.lost:
            summary.lost.append(job.id)
            self.log(f"job {job.id} ({job.name}) was taken over by another processor; the result of this run is not recorded",
                     journal.WARNING, job, self._uid(claim))  # fmt: skip
            return
        if result.outcome is Outcome.INTERRUPTED:
            self._interrupted(claim, job.but(attempts=(*job.attempts, result)), result.reason or "interrupted", summary)
            return
        self.conclude(claim, job, result, summary)

    def _execute(self, claim: Claim, job: Job, worker: Any) -> Result:
        host = hostname()
        if self.config_error:
            return Result.unrun(Outcome.NOT_STARTED, self.config_error, host)
        if worker is None:
            reason = (
                f"{self.unavailable}; jobs are not run without a scope unless "
                f"allow-unconfined = yes is set in [processor] of {self.layout.conf}"
            )
            return Result.unrun(Outcome.NOT_STARTED, reason, host)
        if os.path.lexists(self.layout.cancel_request(job.id)):
            return Result.unrun(Outcome.CANCELLED, "cancelled before it started", host)
        identity = None
        if os.geteuid() == 0 and claim.owner[0] != 0:
            found = identity_for(claim.owner[0], job.submitter.uid)
            if isinstance(found, str):
                return Result.unrun(Outcome.NOT_STARTED, f"not run: {found}", host)
            identity = found
            owner = Owner(identity.uid, identity.user, identity.group_names())
        else:
            owner = Owner(os.geteuid(), job.submitter.user, ())
        limits = at_start(self.layout, self.config, owner, job)  # the run gate (policy.py)
        if isinstance(limits, str):
            return Result.unrun(Outcome.NOT_STARTED, limits, host)
        spec = worker.spec(claim, job, limits, identity)
        result: Result = worker.execute(claim, job, spec, self._uid(claim))
        return result.but(run=f"{self.me.name}#{len(job.attempts) + 1}")

    # -- recording ------------------------------------------------------------

    def conclude(self, claim: Claim, job: Job, result: Result, summary: Summary) -> None:
        """Record a run: done, failed, or back to ``delayed/`` for a retry."""
        attempts = (*job.attempts, result)
        failures = sum(1 for a in attempts if a.counts_as_failure)
        uid = self._uid(claim)
        if result.may_retry and failures <= job.schedule.retries:
            delay = backoff(failures)
            s = job.schedule
            again = job.but(attempts=attempts, schedule=Schedule(s.priority, time.time() + delay, (), s.retries))
            self.log(
                f"job {job.id} ({job.name}) failed: {result.describe()}; attempt {failures + 1} of {s.retries + 1} in {delay:.0f} s",
                journal.WARNING, job, uid, MINIQ_EVENT="retrying", MINIQ_OUTCOME=result.outcome.value,
            )  # fmt: skip
            if self._persist(claim, lambda: claim.postpone(again, time.time() + delay)):
                summary.retrying.append(job.id)
            return
        self.finish(claim, job, result, summary)

    def finish(self, claim: Claim, job: Job, result: Result, summary: Summary) -> None:
        ok = result.succeeded
        self.log(
            f"job {job.id} ({job.name}) {'finished' if ok else 'failed'}: {result.describe()}",
            journal.INFO if ok else journal.ERR, job, self._uid(claim),
            MINIQ_EVENT="finished", MINIQ_OUTCOME=result.outcome.value, MINIQ_LINES=str(result.output_lines or 0),
        )  # fmt: skip
        if self._persist(claim, lambda: claim.finish(job.but(attempts=(*job.attempts, result)), result)):
            (summary.succeeded if ok else summary.failed).append(job.id)
            self.finished += 1
            if claim.follow_up is not None:
                follow = claim.follow_up
                summary.followups.append(follow.id)
                self.log(f"job {job.id} ({job.name}) is followed by job {follow.id} ({follow.name})", journal.INFO, job,
                         self._uid(claim), MINIQ_EVENT="follow-up", MINIQ_FOLLOW_UP_ID=follow.id)  # fmt: skip

    def _reject(self, claim: Claim, summary: Summary) -> None:
        assert claim.unusable is not None
        path = self._persist(claim, claim.reject)
        if path:
            summary.rejected.append(claim.id)
            self.log(f"entry {claim.source} rejected: {claim.unusable.reason}; recorded in {path}", journal.ERR, None,
                     MINIQ_JOB_ID=claim.id, MINIQ_EVENT="finished", MINIQ_OUTCOME=Outcome.REJECTED.value)  # fmt: skip

    def _persist(self, claim: Claim, action: Callable[[], Any]) -> Any:
        """Record something about a claim; on a full disk or an I/O error keep
        the result, say so, and try again until it works (README)."""
        delay = 1.0
        while True:
            try:
                return action()
            except LeaseLost:
                self.log(f"job {claim.id} was taken over by another processor before its result was recorded; not recorded here",
                         journal.WARNING, None, MINIQ_JOB_ID=claim.id)  # fmt: skip
                return None
            except OSError as e:
                if e.errno not in TRANSIENT:
                    self.log(f"cannot record job {claim.id}: {e}; left in running/ for the next processor", journal.ERR, None,
                             MINIQ_JOB_ID=claim.id)  # fmt: skip
                    return None
                self.log(f"cannot record job {claim.id} ({e.strerror}); keeping its result and trying again in {delay:.0f} s",
                         journal.ERR, None, MINIQ_JOB_ID=claim.id)  # fmt: skip
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                self.heartbeat()
                claim.renew_if_due(self.config.lease)
                time.sleep(min(0.5, delay))
            delay = min(delay * 2, RETRY_RECORD_MAX)

    def _uid(self, claim: Claim) -> int | None:
        """Whose journal entries a job's are: its owner's, in a root processor."""
        return claim.owner[0] if os.geteuid() == 0 and claim.owner[0] != 0 else None

    # -- the wake timer -------------------------------------------------------

    def _arm(self, when: float) -> bool:
        """Arm the wake timer for ``when`` (wake.py); False if it could not be."""
        if self.waker is None and self.runner_override is not None:
            return True  # a test's processor: no timer
        from ..systemd.wake import arm_for

        return arm_for(self.manager, when, self.log, self.waker)


def preload() -> None:
    """Import now every module a run may need later, pystemd's bus module
    too.  A package upgrade replaces miniq's files while a processor runs (it
    is left to finish its jobs: packaging/debian/rules); a module first read
    half-way through the run would be of another version than the rest."""
    from ..systemd import dbus as systemd
    from ..systemd import wake  # noqa: F401
    from . import supervisor, worker  # noqa: F401

    try:
        from . import scope  # noqa: F401

        systemd.dbuslib()
    except ImportError:
        pass  # no pystemd: the run says so when it needs a scope
