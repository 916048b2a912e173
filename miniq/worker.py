"""Running one job to its end: start it, forward its output, classify its end.

A ``Worker`` owns one runner (one D-Bus connection: sd-bus connections are
not shared between threads), so a processor running N jobs at once has N
workers in N threads.  While a job runs, the worker checks four times a
second for a cancel request (``cancel/ID``) and, if there is one, stops the
job's scope; the job is then recorded as cancelled.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from typing import Any, Protocol

from . import journal
from .errors import MiniqError
from .job import Job, Outcome, hostname, not_started, now_iso
from .limits import Limits
from .queue import Queue
from .scope import Running, StartFailed

DRAIN_TIMEOUT = 5.0  # seconds to collect output after the scope is stopped
CANCEL_POLL = 0.25  # seconds between checks for a cancel request


class Runner(Protocol):
    confined: bool

    def start(self, job_id: str, name: str, exe: str, argv: list[bytes], env: dict[str, str], cwd: str, limits: Limits) -> Running: ...
    def accounting(self, running: Running) -> dict[str, Any]: ...
    def stop(self, running: Running) -> None: ...


def classify(result: dict[str, Any], limits: Limits, duration: float, cancelled: bool) -> Outcome:
    """Turn a wait status and the scope's accounting into an outcome."""
    if result["exit_code"] == 0:
        return Outcome.EXITED
    if cancelled:
        return Outcome.CANCELLED
    if result.get("oom_kills"):
        return Outcome.OOM
    if limits.timeout is not None and duration >= limits.timeout - 0.05:
        return Outcome.TIMEOUT
    return Outcome.SIGNALED if result["signal"] else Outcome.EXITED


class OutputPump:
    """Forwards a running job's stdout and stderr to the sink, line by line."""

    def __init__(self, sink: journal.Sink, job: Job, running: Running) -> None:
        fields = {"SYSLOG_IDENTIFIER": job.name, "MINIQ_JOB_ID": job.id, "MINIQ_JOB_NAME": job.name}
        self.splitters = {
            fd: journal.LineSplitter(sink, journal.PRIORITY_OF_STREAM[stream], {**fields, "MINIQ_STREAM": stream})
            for fd, stream in ((running.stdout, "stdout"), (running.stderr, "stderr"))
        }
        self.sel = selectors.DefaultSelector()
        for fd in self.splitters:
            self.sel.register(fd, selectors.EVENT_READ)

    def until_exit(self, pid: int, should_stop: Any) -> tuple[int, Any, bool]:
        """Pump until ``pid`` exits: (wait status, rusage, whether stopped early).

        ``should_stop()`` is polled; when it returns True the caller's stop
        action has been taken and the job is expected to die soon.
        """
        pidfd = os.pidfd_open(pid)
        self.sel.register(pidfd, selectors.EVENT_READ)
        stopped = False
        try:
            while True:
                for key, _ in self.sel.select(timeout=CANCEL_POLL):
                    if key.fd == pidfd:
                        _, status, rusage = os.wait4(pid, 0)
                        return status, rusage, stopped
                    self.read(key.fd)
                if not stopped and should_stop():
                    stopped = True
        finally:
            self.sel.unregister(pidfd)
            os.close(pidfd)

    def read(self, fd: int) -> None:
        data = os.read(fd, 65536)
        if data:
            self.splitters[fd].feed(data)
        else:
            self.sel.unregister(fd)
            self.splitters[fd].close()
            os.close(fd)

    def drain(self) -> None:
        """Collect output still in the pipes once the scope is stopped."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.sel.get_map() and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=max(0.0, deadline - time.monotonic())):
                self.read(key.fd)
        for key in list(self.sel.get_map().values()):  # a leftover that escaped the kill
            self.sel.unregister(key.fd)
            self.splitters[key.fd].close()
            os.close(key.fd)
        self.sel.close()


class Worker:
    """Runs jobs of one queue, one at a time, with its own runner."""

    def __init__(self, queue: Queue, runner: Runner, sink: journal.Sink, log: Any) -> None:
        self.queue, self.runner, self.sink, self.log = queue, runner, sink, log

    def execute(self, job: Job, limits: Limits) -> dict[str, Any]:
        """Run one job to its end and return its ``result`` record."""
        try:
            exe = self.queue.job_type(job.name)
        except MiniqError as e:
            return not_started(e.message)
        env = dict(os.environ, MINIQ_JOB_ID=job.id, MINIQ_JOB_NAME=job.name, MINIQ_ROOT=str(self.queue.root))
        started_iso = now_iso()
        try:
            running = self.runner.start(job.id, job.name, str(exe), job.argv_bytes(), env, str(self.queue.root), limits)
        except StartFailed as e:
            return not_started(str(e))
        self.log(
            f"job {job.id} ({job.name}) started" + (f" in {running.unit}" if running.unit else " without a scope"),
            journal.INFO,
            job.id,
            MINIQ_JOB_NAME=job.name,
            MINIQ_EVENT="started",
        )
        pump = OutputPump(self.sink, job, running)

        def cancel_requested() -> bool:
            if not self.queue.cancel_requested(job.id):
                return False
            self.log(f"job {job.id} ({job.name}) cancel requested: stopping it", journal.NOTICE, job.id)
            self.runner.stop(running)
            return True

        status, rusage, cancelled = pump.until_exit(running.pid, cancel_requested)
        duration = time.monotonic() - running.started
        acct = self.runner.accounting(running)
        self.runner.stop(running)
        pump.drain()
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
        result["outcome"] = classify(result, limits, duration, cancelled).value
        return result
