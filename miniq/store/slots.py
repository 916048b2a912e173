"""At most N jobs of one type at once, over every processor and machine.

``[job:NAME] parallel = N`` in miniq.conf gives job type NAME N *slots*:
entries of ``slots/N-NAME/``, each either free (``K``) or held by a claim
(``K@ID@CLAIMER``, for the claim ``running/ID@CLAIMER.json``).  A processor
that claimed a job of NAME takes a slot with one rename of a free ``K`` to
its own name, exactly as it takes a job (claims.py): of two processors
renaming the same ``K`` one wins, on one machine or over NFS.  It gives the
slot back with the reverse rename when the run is recorded.

A slot lives as long as its claim, so it needs no lease of its own: a slot
whose claim is gone (the run was recorded, or the claim was taken over after
its holder died or stopped renewing its lease, claims.py) is free, and any
processor renames it back to ``K``.  So a dead machine's slot is freed as soon
as its claim is recovered.

The directory of slots is made whole and then renamed into place, so two
processors making it at once never make more than N slots.  Changing N makes
a new directory (``slots/M-NAME``); jobs that hold a slot of the old one give
it back there, so for as long as they run both caps count.

A job that finds no free slot is held (``delayed/held-ID.json``, pause.py)
and goes back to ``queue/``, under its old name and so in its old place,
when a slot is free.  Jobs of other types pass it meanwhile.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import NamedTuple

from ..core import files
from .layout import Layout, claim_name

_GONE = (errno.ENOENT, errno.ESTALE)


def directory(layout: Layout, name: str, count: int) -> Path:
    return layout.slots / f"{count}-{name}"


def _ensure(layout: Layout, name: str, count: int) -> Path:
    """The slot directory of ``name`` with ``count`` slots, made if missing."""
    target = directory(layout, name, count)
    if target.is_dir():
        return target
    layout.slots.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = layout.tmp / files.staging_name(f"slots-{target.name}")
    staging.mkdir(mode=0o700)
    try:
        for k in range(count):
            (staging / str(k)).touch(mode=0o600)
        files.fsync_dir(staging)
        try:
            os.rename(staging, target)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, *_GONE):
                raise
        files.fsync_dir(layout.slots)
    finally:
        import shutil  # with bz2 and lzma: not for every cold processor's start

        shutil.rmtree(staging, ignore_errors=True)
    return target


def _holder_alive(layout: Layout, holder: str) -> bool:
    """Whether the claim ``ID@CLAIMER`` a slot names still exists (running or being recorded)."""
    job_id, _, claimer = holder.partition("@")
    # The fence renames .json to .done: look at .json first, so the move is never missed.
    return os.path.lexists(layout.claim(job_id, claimer)) or os.path.lexists(layout.claim(job_id, claimer, finishing=True))


def _scan(layout: Layout, where: Path) -> list[str]:
    """Free slot names of ``where``, after freeing those whose claim is gone."""
    files.revalidate(where)
    files.revalidate(layout.running)
    try:
        names = os.listdir(where)
    except FileNotFoundError:
        return []
    free = []
    for name in names:
        slot, at, holder = name.partition("@")
        if not slot.isdigit():
            continue
        if not at:
            free.append(name)
        elif not _holder_alive(layout, holder):
            try:
                os.rename(where / name, where / slot)
                free.append(slot)
            except OSError as e:
                if e.errno not in _GONE:
                    raise
    return sorted(set(free), key=int)


class Slot(NamedTuple):
    """A slot this processor holds for one claim."""

    path: Path

    def release(self) -> None:
        """Give the slot back (a no-op if it was freed as stale meanwhile)."""
        free = self.path.with_name(self.path.name.partition("@")[0])
        try:
            os.rename(self.path, free)
        except OSError as e:
            if e.errno not in _GONE:
                raise


def take(layout: Layout, name: str, count: int, job_id: str, claimer: str) -> Slot | None:
    """A slot of job type ``name`` for the claim of ``job_id``; None if all are taken."""
    where = _ensure(layout, name, count)
    own = f"@{claim_name(job_id, claimer)[: -len('.json')]}"
    for slot in _scan(layout, where):
        target = where / f"{slot}{own}"
        try:
            os.rename(where / slot, target)
        except OSError as e:
            if e.errno not in _GONE:
                raise
        # Over NFS a rename may report an error after it succeeded: our name decides.
        if os.path.lexists(target):
            return Slot(target)
    return None


def free(layout: Layout, name: str, count: int) -> int:
    """How many slots of ``name`` are free now (stale ones freed first)."""
    where = directory(layout, name, count)
    if not where.is_dir():
        return count
    return len(_scan(layout, where))


def in_use(layout: Layout, uid: int | None = None) -> dict[str, tuple[int, int]]:
    """Job type -> (slots held, slots) for every cap in use (for stats and
    doctor); with ``uid``, only the slots that user's running jobs hold (a
    user's figures through the helper count only their own jobs)."""
    found: dict[str, tuple[int, int]] = {}
    try:
        entries = os.listdir(layout.slots)
    except FileNotFoundError:
        return found
    for entry in entries:
        count, dash, name = entry.partition("-")
        if not dash or not count.isdigit():
            continue
        try:
            holders = [n.partition("@")[2] for n in os.listdir(layout.slots / entry) if "@" in n]
        except OSError:
            continue
        if uid is not None:
            holders = [h for h in holders if _claim_owner(layout, h) == uid]
        found[name] = (len(holders), int(count))
    return found


def _claim_owner(layout: Layout, holder: str) -> int | None:
    """The owner of the claim ``running/HOLDER.json`` that holds a slot, if it is there."""
    try:
        return os.lstat(layout.running / f"{holder}.json").st_uid
    except OSError:
        return None
