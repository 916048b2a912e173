"""Passing a running job's stdout and stderr to the journal, line by line.

``OutputPump`` reads both pipes until the job's process exits (a pidfd tells
when), calling back four times a second so the worker can act on a cancel
request or renew its lease.  It counts the lines a job wrote.

Each job passes at most ``output-rate-limit`` lines (default 10000 per
30 s, journald's own default; ``Budget``): beyond that, lines are dropped and
counted, and one ``MINIQ_EVENT=dropped`` entry says how many, so nobody is
left guessing.  The budget is the job's own, so one job's flood never costs
another job a line (in the system queue: another user).  In a user manager,
where journald limits all of a user's services together and miniq cannot
lift that, the processor's jobs also share one budget of that size, so
journald never drops lines silently.  miniq's own entries are never subject
to a budget.
"""

from __future__ import annotations

import os
import selectors
import time
from collections.abc import Callable
from typing import Any

from ..systemd import journal
from .runner import Running

TICK = 0.25  # seconds between callbacks while a job runs
DRAIN_TIMEOUT = 5.0  # seconds to collect output after the scope is stopped


class Budget:
    """A token bucket of lines; ``None`` for no limit.  A line taken from a
    budget with a ``shared`` one must pass both."""

    def __init__(self, limit: tuple[int, float] | None, shared: Budget | None = None) -> None:
        self.limit, self.shared = limit, shared
        self.tokens = float(limit[0]) if limit else 0.0
        self.last = time.monotonic()

    def _refill(self) -> bool:
        if self.limit is None:
            return True
        lines, seconds = self.limit
        now = time.monotonic()
        self.tokens = min(float(lines), self.tokens + (now - self.last) * lines / seconds)
        self.last = now
        return self.tokens >= 1

    def take(self) -> bool:
        if not self._refill() or (self.shared is not None and not self.shared.take()):
            return False
        if self.limit is not None:
            self.tokens -= 1
        return True

    def describe(self) -> str:
        return "no limit" if self.limit is None else f"{self.limit[0]} lines per {self.limit[1]:g} s"


class OutputPump:
    def __init__(self, sink: journal.Sink, fields: dict[str, str], running: Running, budget: Budget, uid: int | None = None) -> None:
        self.sink, self.fields, self.budget, self.uid = sink, fields, budget, uid
        self.lines = 0
        self.dropped = 0
        self.unreported = 0
        self.splitters = {
            running.stdout: journal.LineSplitter(self._emitter("stdout")),
            running.stderr: journal.LineSplitter(self._emitter("stderr")),
        }
        self.sel = selectors.DefaultSelector()
        for fd in self.splitters:
            self.sel.register(fd, selectors.EVENT_READ)

    def _emitter(self, stream: str) -> Callable[[bytes, bool], None]:
        fields = {**self.fields, "MINIQ_STREAM": stream}
        priority = journal.PRIORITY_OF_STREAM[stream]

        def emit(chunk: bytes, partial: bool) -> None:
            if not partial:
                self.lines += 1
            if not self.budget.take():
                if not partial:
                    self.dropped += 1
                    self.unreported += 1
                return
            self.report_dropped()
            self.sink.send(chunk, priority, {**fields, "MINIQ_PARTIAL": "1"} if partial else fields, self.uid)

        return emit

    def report_dropped(self) -> None:
        if not self.unreported:
            return
        message = f"miniq: {self.unreported} line(s) of this job's output dropped (output-rate-limit: {self.budget.describe()})"
        event = {**self.fields, "MINIQ_EVENT": "dropped", "MINIQ_DROPPED": str(self.unreported), "SYSLOG_IDENTIFIER": "miniq"}
        self.sink.send(message.encode(), journal.NOTICE, event, self.uid)
        self.unreported = 0

    def until_exit(self, pid: int, tick: Callable[[], bool]) -> tuple[int, Any, bool]:
        """Pump until ``pid`` exits: (wait status, rusage, whether stopped early).

        ``tick()`` is called every ``TICK`` seconds; when it returns True the
        caller has stopped the job, which is expected to die soon.
        """
        pidfd = os.pidfd_open(pid)
        self.sel.register(pidfd, selectors.EVENT_READ)
        stopped = False
        next_tick = time.monotonic() + TICK
        try:
            while True:
                for key, _ in self.sel.select(timeout=max(0.0, next_tick - time.monotonic())):
                    if key.fd == pidfd:
                        _, status, rusage = os.wait4(pid, 0)
                        return status, rusage, stopped
                    self.read(key.fd)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK
                    if not stopped and tick():
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
        self.report_dropped()
