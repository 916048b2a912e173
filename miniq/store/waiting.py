"""``miniq wait``: block until jobs finish, without spinning.

The waiter sleeps on inotify events of ``done/`` and ``failed/`` and wakes
when a record with one of its ids appears; it also looks once a second, for
records written by other machines over NFS (which inotify does not see), and
every few seconds checks that each job still exists.  Looking a job up
tolerates it moving between states (queue.py), so a busy queue never makes
``wait`` fail spuriously.  In the system queue's helper, a client that hangs
up ends its wait within ``POLL`` seconds (hangup.py).  Once its jobs are
done it removes its watches at once, before reading their records: closing an
inotify descriptor right after (or without) that costs the exit 14 ms here
(inotify.py).
"""

from __future__ import annotations

import os
import select
import time

from ..core import files, hangup
from ..core.inotify import open_watch
from ..core.job import State
from .queue import Queue
from .records import Record

POLL = 1.0  # seconds between looks of its own (NFS)
EXISTENCE = 5.0  # seconds between checks that waited-for jobs still exist


def _finished(queue: Queue, job_id: str) -> bool:
    layout = queue.layout
    return os.path.lexists(layout.record(State.DONE, job_id)) or os.path.lexists(layout.record(State.FAILED, job_id))


def wait(queue: Queue, job_ids: list[str], timeout: float | None = None) -> list[Record]:
    """Block until every job is finished; return their records in order.

    ``UnknownJob`` if an id is unknown (or the job vanishes), ``TimeoutError``
    if ``timeout`` seconds pass first.
    """
    for job_id in job_ids:
        queue.locate(job_id)  # unknown ids fail at once
    deadline = None if timeout is None else time.monotonic() + timeout
    watch = open_watch(queue.dir(State.DONE), queue.dir(State.FAILED))
    pending = list(dict.fromkeys(job_ids))
    checked = time.monotonic()
    try:
        while True:
            pending = [j for j in pending if not _finished(queue, j)]
            if not pending:
                break
            hangup.check()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise TimeoutError
            if now - checked >= EXISTENCE:
                for job_id in pending:
                    queue.locate(job_id)
                checked = now
            pause = POLL if deadline is None else min(POLL, deadline - now)
            if watch is not None:
                ready, _, _ = select.select([watch.fileno()], [], [], pause)
                if ready:
                    watch.events()
            else:
                time.sleep(pause)
            files.revalidate(queue.dir(State.DONE))
            files.revalidate(queue.dir(State.FAILED))
        if watch is not None:
            watch.unwatch()  # now, so that closing it after the reads is cheap (inotify.py)
        return [queue.read(j) for j in job_ids]
    finally:
        if watch is not None:
            watch.close()
