"""Worker processes: how a processor runs ``parallel`` jobs at once.

With ``parallel`` above 1, the processor forks one worker process per slot
(before any D-Bus connection is opened: sd-bus must not cross a fork); each
worker claims and runs jobs like a single processor would, with its own
connection, and reports what it did when the queue is empty.  The parent
supervises them: it keeps the service's start timeout moving while they make
progress, kills a worker that made none for ``HANG_TIMEOUT`` seconds, and
recovers the job of a worker that died (its claim is provably dead).
Processes, not threads: the workers do not share one interpreter lock, and
a fork in a process without threads is safe.
"""

from __future__ import annotations

import json
import os
import select
import signal
import time
from typing import TYPE_CHECKING

from . import journal, notify
from .claims import Claimer
from .summary import Summary

if TYPE_CHECKING:
    from .processor import Processor

HANG_TIMEOUT = 120.0  # seconds a worker process may go without a heartbeat


def fork_worker(processor: Processor, linger: float) -> tuple[int, int]:
    """Start one worker process; returns (pid, read end of its report pipe)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(write_end)
        return pid, read_end
    os.close(read_end)
    code = 0
    mine = Summary()
    try:
        processor.me = Claimer.current()
        processor.heartbeat = lambda: _beat(write_end)
        if processor.max_jobs is not None:
            processor.max_jobs = -(-processor.max_jobs // (processor.parallel or processor.config.parallel))
        runner = processor._runner()
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


def supervise(processor: Processor, workers: list[tuple[int, int]], summary: Summary) -> None:
    """Wait for the worker processes; kill one that hangs; recover the jobs of any that died."""
    beats = {fd: time.monotonic() for _, fd in workers}
    reports = {fd: b"" for _, fd in workers}
    pids = {fd: pid for pid, fd in workers}
    casualties = False
    while beats:
        notify.alive()
        ready, _, _ = select.select(list(beats), [], [], 1.0)
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                beats[fd] = time.monotonic()
                reports[fd] += data.replace(b".", b"")
                continue
            del beats[fd]
            os.close(fd)
            _, status = os.waitpid(pids[fd], 0)
            casualties |= status != 0
            try:
                summary.merge(json.loads(reports[fd].strip().splitlines()[-1]))
            except (ValueError, IndexError):
                casualties = True
        for fd, seen in list(beats.items()):
            if time.monotonic() - seen > HANG_TIMEOUT:
                processor.log(f"worker process {pids[fd]} made no progress for {HANG_TIMEOUT:.0f} s; killing it", journal.ERR)
                os.kill(pids[fd], signal.SIGKILL)
                beats[fd] = time.monotonic()
    if casualties:
        processor.recover(summary)


def _beat(fd: int) -> None:
    try:
        os.write(fd, b".")
    except OSError:
        pass
