"""Follow-up jobs: ``--on-failure NAME`` and ``--on-success NAME``.

When a job ends for good (after its retries; also when it is cancelled or
never runs), the job type its outcome names is queued with the finished
job's id as its one argument, and ``MINIQ_FOLLOWS_ID``, ``_NAME``,
``_OUTCOME`` and ``_STATUS`` (the status ``miniq wait`` gives) in its
environment, as systemd's ``OnFailure=`` starts a unit.  The follow-up
belongs to the finished job's owner and runs as them.

It passes the one gate like every job (policy.py, the follow-up door) with
the finished job's owner's rights: a follow-up the gate refuses (its type
gone, its owner no longer allowed, over their caps) is not queued but
recorded at once in ``failed/`` as not started, with the gate's reason, so it
shows in ``miniq list`` where the follow-up would have.

It is queued after the run is fenced and before its record is published
(claims.py), so no crash loses it.  A crash between the two runs the job's
recording again; the follow-up's unique key (``follow-up:ID``, unique.py)
keeps a second one from being queued while the first is unfinished.  A
follow-up job has no follow-ups of its own, so a chain never loops.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..core import files
from ..core.errors import MiniqError
from ..core.files import dump
from ..core.job import Follows, Job, State, hostname
from ..core.result import Outcome, Result
from . import unique
from .layout import Layout
from .policy import Ask, Door, Owner, admit

if TYPE_CHECKING:
    from .policy import Admitted


def queue_follow_up(layout: Layout, job: Job, result: Result, owner: tuple[int, int]) -> Job | None:
    """Queue the follow-up of ``job`` ending with ``result``, if it has one;
    if the gate refuses it, record it as not started (module comment)."""
    name = job.on_success if result.succeeded else job.on_failure
    if name is None or job.follows is not None:
        return None
    uid = unique.key_owner(owner[0])
    chown = owner if os.geteuid() == 0 and owner[0] != 0 else None
    follows = Follows(job.id, job.name, result.outcome.value, result.wait_status)
    new = Job.new(name, [job.id], uid=uid).but(follows=follows, unique=f"follow-up:{job.id}")
    try:
        admitted = admit(layout, Door.FOLLOW_UP, [Ask.of(new)], Owner.of(uid) if chown else Owner.current())
    except MiniqError as e:
        refused = Result.unrun(Outcome.NOT_STARTED, f"follow-up of job {job.id} not queued: {e.message}", hostname())
        record = new.but(unique=None, attempts=(refused,)).record(refused, State.FAILED)
        files.write_durably(layout.tmp, layout.record(State.FAILED, new.id), dump(record), owner=chown, replace=False)
        return new
    try:
        unique.take(layout, new.unique or "", uid, new.id, chown)
    except unique.AlreadyQueued:
        return None
    publish(admitted, layout, new, chown)
    return new


def publish(admitted: Admitted, layout: Layout, new: Job, chown: tuple[int, int] | None) -> None:
    """Write a follow-up that passed the gate into ``queue/``."""
    assert admitted.asks[0].name == new.name
    files.write_durably(layout.tmp, layout.queued(0, new.id), dump(new.to_json()), owner=chown)
