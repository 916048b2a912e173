"""Worker processes: how a processor runs ``parallel`` jobs at once, every slot live.

With ``parallel`` above 1, the processor forks one worker process per slot
(before any D-Bus connection is opened: sd-bus must not cross a fork); each
worker claims and runs jobs like a single processor would, with its own
connection.  A worker with nothing to run does not leave: it waits on inotify
for the next job (processor.py, ``_idle``), so a job queued while other slots
run long jobs starts at once in a free one.  It tells its supervisor when it
is busy and when it is idle; once every worker has been idle for ``linger``
seconds, the supervisor closes their lifelines and they exit with a report of
what they did.  A job that arrives meanwhile is still taken by whichever
worker sees it first, and the processor's own last look at the queue
(processor.py, ``run``) starts workers again for a job that came as they left.

The supervisor keeps the service's start timeout moving while workers make
progress, kills a worker that made none for ``HANG_TIMEOUT`` seconds, and
when one dies recovers its job at once (its claim is provably dead) and
forks a replacement, so the slot stays open while other jobs run.
Processes, not threads: the workers do not share one interpreter lock, and
a fork in a process without threads is safe.

A worker speaks to its supervisor on one pipe: ``.`` a heartbeat, ``BUSY``
or ``IDLE`` a change of state, and at its end a line of JSON (its Summary).
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Protocol

from ..core import notify
from ..core.proc import Claimer
from ..core.summary import Summary
from ..systemd import journal

if TYPE_CHECKING:
    from ..core.job import Job
    from ..store.config import Config
    from .runner import Runner

HANG_TIMEOUT = 120.0  # seconds a worker process may go without a heartbeat
BEAT, BUSY, IDLE = b".", b"\x01", b"\x02"


class Processor(Protocol):
    """What a supervisor needs of its processor (processor.py), which each
    worker process it forks becomes, with its own claimer and pipes."""

    me: Claimer
    heartbeat: Callable[[], None]
    state: Callable[[bool], None]
    lifeline: int | None
    max_jobs: int | None

    @property
    def parallel(self) -> int | None: ...
    @property
    def config(self) -> Config: ...
    @property
    def stopping(self) -> bool: ...
    def make_runner(self) -> Runner | None: ...
    def work(self, runner: Runner | None, summary: Summary, linger: float) -> None: ...
    def recover(self, summary: Summary) -> None: ...
    def log(self, message: str, priority: int = ..., job: Job | None = None, uid: int | None = None, **fields: str) -> None: ...


class _Worker:
    """What the supervisor knows of one worker process."""

    __slots__ = ("beat", "idle_since", "lifeline", "pid", "report")

    def __init__(self, pid: int, lifeline: int) -> None:
        self.pid, self.lifeline = pid, lifeline
        self.beat = time.monotonic()
        self.idle_since: float | None = None  # busy until it says otherwise
        self.report = b""


def fork_worker(processor: Processor, linger: float, others: list[int]) -> tuple[int, int, int]:
    """Start one worker process; returns (pid, read end of its report pipe,
    write end of its lifeline).  ``others``: descriptors of the supervisor
    the child must not keep (its siblings' lifelines, so that closing one ends it)."""
    read_end, write_end = os.pipe()
    lifeline_r, lifeline_w = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(write_end)
        os.close(lifeline_r)
        return pid, read_end, lifeline_w
    for fd in (read_end, lifeline_w, *others):
        os.close(fd)
    code = 0
    mine = Summary()
    try:
        processor.me = Claimer.current()
        processor.heartbeat = lambda: _say(write_end, BEAT)
        processor.state = lambda busy: _say(write_end, BUSY if busy else IDLE)
        processor.lifeline = lifeline_r
        if processor.max_jobs is not None:
            processor.max_jobs = -(-processor.max_jobs // (processor.parallel or processor.config.parallel))
        runner = processor.make_runner()
        try:
            processor.work(runner, mine, linger)
        finally:
            if runner:
                runner.close()
    except BaseException as e:  # noqa: BLE001 - report, then leave without running the parent's cleanup
        processor.log(f"worker process failed: {e!r}", journal.ERR)
        code = 1
    finally:
        try:
            os.write(write_end, b"\n" + json.dumps(mine.to_json()).encode() + b"\n")
        finally:
            os._exit(code)


def supervise(processor: Processor, count: int, linger: float, summary: Summary) -> None:
    """Run ``count`` workers until every one has been idle for ``linger``
    seconds (or the processor stops); replace one that dies, kill one that hangs."""
    workers: dict[int, _Worker] = {}

    def start() -> None:
        pid, fd, lifeline = fork_worker(processor, linger, [w.lifeline for w in workers.values() if w.lifeline >= 0] + list(workers))
        workers[fd] = _Worker(pid, lifeline)

    for _ in range(count):
        start()
    ending = False
    while workers:
        notify.alive()
        ready, _, _ = select.select(list(workers), [], [], 0.5)
        for fd in ready:
            worker = workers[fd]
            data = os.read(fd, 65536)
            if data:
                _heard(worker, data)
                continue
            del workers[fd]
            os.close(fd)
            _close(worker)
            _, status = os.waitpid(worker.pid, 0)
            died = status != 0
            try:
                summary.merge(json.loads(worker.report.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                died = True
            if died:
                processor.log(f"worker process {worker.pid} ended with status {status}; recovering its job", journal.ERR)
                processor.recover(summary)
                if not ending and not processor.stopping and processor.max_jobs is None:
                    start()  # the slot stays open while the others run
        now = time.monotonic()
        for worker in list(workers.values()):
            if now - worker.beat > HANG_TIMEOUT:
                processor.log(f"worker process {worker.pid} made no progress for {HANG_TIMEOUT:.0f} s; killing it", journal.ERR)
                os.kill(worker.pid, signal.SIGKILL)
                worker.beat = now
        if not ending and workers and (processor.stopping or _all_idle(workers.values(), linger, now)):
            ending = True
            for worker in workers.values():
                _close(worker)


def _heard(worker: _Worker, data: bytes) -> None:
    """Take in what a worker said: beats, states, its report."""
    worker.beat = time.monotonic()
    last = max(data.rfind(BUSY), data.rfind(IDLE))
    if last >= 0:
        worker.idle_since = time.monotonic() if data[last : last + 1] == IDLE else None
    worker.report += data.replace(BEAT, b"").replace(BUSY, b"").replace(IDLE, b"")


def _all_idle(workers: Iterable[_Worker], linger: float, now: float) -> bool:
    """Whether every worker is idle, the last of them for ``linger`` seconds."""
    idle = [w.idle_since for w in workers]
    return all(since is not None for since in idle) and now - max(since for since in idle if since is not None) >= linger


def _close(worker: _Worker) -> None:
    if worker.lifeline >= 0:
        os.close(worker.lifeline)
        worker.lifeline = -1


def _say(fd: int, what: bytes) -> None:
    try:
        os.write(fd, what)
    except OSError:
        pass
