"""Moving delayed jobs into the queue when their time comes.

``delayed/`` holds jobs waiting for a time (their names carry it, layout.py),
jobs waiting for the jobs they run ``--after``, and held jobs, whose type is
paused or at its cap (pause.py, slots.py).  A held job goes back to ``queue/``
once its type is resumed and a slot of it is free, oldest first, at most as
many as there are free slots.  ``promote`` moves the
due ones to ``queue/`` with one rename each, re-files a job whose
dependencies all succeeded, and records as not run a job whose dependency
failed or vanished.  An entry that is not a usable job is claimed and
rejected like any other (claims.py).  It costs nothing for entries that are
not due: the processor's view (pending.py) keeps them in order by due time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..core import files
from ..core.files import Unusable, read_untrusted
from ..core.job import Job, hostname
from ..core.result import Outcome, Result
from ..store.claims import Claim
from ..store.layout import is_id, parse_delayed_name
from ..store.pending import Pending, dependency_state

if TYPE_CHECKING:
    from ..core.proc import Claimer
    from ..core.summary import Summary
    from ..store.config import Config
    from ..store.layout import Layout

DEPENDENCY_CHECK = 1.0  # seconds between checks of jobs waiting for others (also after every record)
HELD_CHECK = 1.0  # seconds between checks of held jobs (also after every record and wake)


class Processor(Protocol):
    """What promotion needs of the processor that runs it (processor.py)."""

    @property
    def layout(self) -> Layout: ...
    @property
    def config(self) -> Config: ...
    @property
    def me(self) -> Claimer: ...
    @property
    def finished(self) -> int: ...
    def run_claim(self, claim: Claim, worker: Any, summary: Summary) -> None: ...
    def finish(self, claim: Claim, job: Job, result: Result, summary: Summary) -> None: ...


def promote(processor: Processor, pending: Pending, summary: Summary) -> float | None:
    """Promote what is due; returns when the earliest delayed job is due, if any."""
    woken = pending.take_wake()
    if not pending.delayed_listed or time.monotonic() - pending.delayed_listed > 5.0 or woken:
        pending.list_delayed()
    pending.absorb()
    now = time.time()
    for path in pending.due_now(now):
        _due(processor, pending, path, now, summary)
    if pending.after and (time.monotonic() - pending.checked >= DEPENDENCY_CHECK or processor.finished != pending.checked_count):
        pending.checked, pending.checked_count = time.monotonic(), processor.finished
        for path, job in list(pending.waiting()):
            _waiting(processor, pending, path, job, now, summary)
    if pending.held and (woken or time.monotonic() - pending.held_checked >= HELD_CHECK or processor.finished != pending.held_count):
        pending.held_checked, pending.held_count = time.monotonic(), processor.finished
        _release_held(processor, pending, now, summary)
    return pending.earliest()


def _release_held(processor: Processor, pending: Pending, now: float, summary: Summary) -> None:
    """Queue again the held jobs that may run now, oldest first (module comment)."""
    from ..store import slots
    from ..store.pause import is_paused, paused_names

    paused = paused_names(processor.layout)
    free: dict[str, int] = {}
    for path, job in list(pending.held_jobs()):
        if job is None:
            if os.path.lexists(path):
                _reject(processor, path, summary)
            pending.forget(path)
            continue
        if is_paused(paused, job.name):
            continue
        cap = processor.config.type_parallel.get(job.name)
        if cap is not None:
            if job.name not in free:
                free[job.name] = slots.free(processor.layout, job.name, cap)
            if free[job.name] <= 0:
                continue
            free[job.name] -= 1
        _to_queue(processor, pending, path, job, now)


def _reject(processor: Processor, path: Path, summary: Summary) -> None:
    parsed = parse_delayed_name(path.name)
    stem = path.name[:-5] if path.name.endswith(".json") else ""
    job_id = parsed[1] if parsed else (stem if is_id(stem) else None)
    claim = Claim.take(processor.layout, path, processor.me, job_id)
    if claim is None:
        return
    if claim.unusable is None:  # it was fine after all: back to what it waits for
        job = claim.job
        assert job is not None
        if job.schedule.after:
            claim.postpone(job, None)  # its dependencies, checked again (never the queue)
        elif job.schedule.not_before is not None and job.schedule.not_before > time.time():
            claim.postpone(job, job.schedule.not_before)
        else:
            claim.requeue(job)
        return
    processor.run_claim(claim, None, summary)


def _read(path: Path) -> Job | None | str:
    """The job in a delayed entry; None if gone; a reason if unusable."""
    try:
        data, _ = read_untrusted(path)
        return Job.from_json(files.load_json(data))
    except FileNotFoundError:
        return None
    except Unusable as e:
        return e.reason
    except ValueError as e:
        return str(e)


def _to_queue(processor: Processor, pending: Pending, path: Path, job: Job, now: float) -> None:
    """Re-file ``job`` by what it waits for now: its time, or nothing (the queue)."""
    layout = processor.layout
    due = job.schedule.not_before
    try:
        if due is not None and due > now:
            target = layout.delayed_entry(job.id, due)
            if target != path:
                files.move_durably(path, target)
            pending.add_due(due, target.name)
            return
        if job.schedule.priority:
            layout.priority_marker(job.schedule.priority).touch()
        files.move_durably(path, layout.queued(job.schedule.priority, job.id))
    except FileNotFoundError:
        pass  # another processor moved it first
    pending.forget(path)


def _due(processor: Processor, pending: Pending, path: Path, now: float, summary: Summary) -> None:
    job = _read(path)
    if job is None:
        return
    parsed = parse_delayed_name(path.name)
    if isinstance(job, str) or (parsed and parsed[1] != job.id):
        _reject(processor, path, summary)
        return
    if job.schedule.after and (parsed is None or parsed[0] is None or any(dependency_state(processor.layout, job))):
        # A 0.1.0 name, or a job due again (its run was interrupted) whose dependencies
        # have not all succeeded: it waits for them (_waiting), never runs before.
        target = processor.layout.delayed_entry(job.id, None)
        try:
            files.move_durably(path, target)
        except FileNotFoundError:
            return  # another processor moved it first
        pending.add_waiting(target.name)
        return
    _to_queue(processor, pending, path, job, now)


def _waiting(processor: Processor, pending: Pending, path: Path, job: Job | None, now: float, summary: Summary) -> None:
    if job is None:
        if os.path.lexists(path):
            _reject(processor, path, summary)
        pending.forget(path)
        return
    waiting, reason = dependency_state(processor.layout, job)
    if reason:
        claim = Claim.take(processor.layout, path, processor.me, job.id)
        pending.forget(path)
        if claim is not None and claim.job is not None:
            processor.finish(claim, claim.job, Result.unrun(Outcome.NOT_STARTED, reason, hostname()), summary)
        elif claim is not None:
            processor.run_claim(claim, None, summary)
        return
    if not waiting:
        _to_queue(processor, pending, path, job, now)
