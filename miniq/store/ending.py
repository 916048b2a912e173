"""The end of a claim: what a processor publishes when it lets go of a job.

A claim ends by publishing one file: the record in ``done/`` or ``failed/``,
or the job again in ``delayed/`` or ``queue/``.  The file is staged first in
``tmp/`` under a name that says where it goes and who staged it::

    tmp/.end~DIR~ENTRY~CLAIMER~end.tmp

and only then is the claim fenced (renamed to ``ID@CLAIMER.done``, claims.py).
A holder never stages again after its fence, so a fenced claim always has
its stage until the stage is published (linked to ``DIR/ENTRY`` or renamed
there) and removed.  A processor that takes over a fenced claim whose
holder stalled (stopped, frozen, cut off from the file server for longer
than the lease) publishes the holder's stage itself instead of running the
job again; the holder, when it wakes, finds that file published (or its
stage gone, then it publishes nothing).  Either way one file is published,
so the job is recorded (or queued again) once, and a stalled holder can no
longer publish a record after its job ran again.  A fenced claim without a
stage (its holder died before the stage was durable, or it was left by
miniq 0.3.0) is recovered as before: the job runs again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..core import files
from ..core.job import Job, State
from ..core.result import Result
from ..core.schedule import ID_RE
from .layout import Layout

PREFIX = ".end~"
SUFFIX = "~end.tmp"
#: The directories a claim's end may publish to.
TARGETS = ("done", "failed", "delayed", "queue")


def stage_name(target: Path, claimer: str) -> str:
    return f"{PREFIX}{target.parent.name}~{target.name}~{claimer}{SUFFIX}"


def parse(name: str) -> tuple[str, str, str] | None:
    """(directory, entry, claimer) of a stage's name, or None."""
    if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
        return None
    parts = name[len(PREFIX) : -len(SUFFIX)].split("~")
    if len(parts) != 3 or parts[0] not in TARGETS or "/" in parts[1] or not parts[1]:
        return None
    return parts[0], parts[1], parts[2]


def stage(layout: Layout, target: Path, claimer: str, data: bytes, owner: tuple[int, int] | None) -> Path:
    """Stage ``data`` for ``target``: on disk under its stage name, written
    whole before the name appears (files.py).  ``tmp/`` is not flushed: a
    fenced claim whose stage a power cut lost runs again (at-least-once).
    An earlier stage of the same end (a try that met a full disk) is ours
    and replaced: staging happens only before the fence."""
    path = layout.tmp / stage_name(target, claimer)
    remove(path)
    return files.stage(layout.tmp, path.name, data, owner)


def find(layout: Layout, job_id: str, claimer: str) -> tuple[Path, Path] | None:
    """(stage, target) that ``claimer`` staged for job ``job_id``, if any."""
    try:
        names = os.listdir(layout.tmp)
    except FileNotFoundError:
        return None
    for name in names:
        parsed = parse(name)
        if parsed and parsed[2] == claimer and _entry_id(parsed[1]) == job_id:
            return layout.tmp / name, layout.root / parsed[0] / parsed[1]
    return None


def _entry_id(entry: str) -> str:
    """The job id in ``ID.json``, ``PPPP-ID.json`` or ``T-ID.json``."""
    m = ID_RE.search(entry)
    return m.group(0) if m else ""


def is_record(target: Path) -> bool:
    return target.parent.name in (State.DONE.dirname, State.FAILED.dirname)


def publish(stage_path: Path, target: Path) -> bool:
    """Publish a stage at ``target``; True if ``target`` is now that file,
    False if another record is there.  ``FileNotFoundError`` if the stage is
    gone.  A record is linked (never replacing another; records may have two
    links); a job entry is renamed (a processor rejects a queued entry with
    two links as someone else's file, claims.py)."""
    if not is_record(target):
        os.rename(stage_path, target)
        files.fsync_dir(target.parent)
        return True
    try:
        os.link(stage_path, target)
    except FileExistsError:
        try:
            if not os.path.samefile(stage_path, target):
                return False
        except FileNotFoundError:
            return False
    files.fsync_dir(target.parent)
    return True


def held_by_fenced_claim(layout: Layout, name: str) -> bool:
    """Whether a stage in ``tmp/`` still belongs to a fenced claim (then it
    is kept however old: whoever recovers the claim publishes it)."""
    parsed = parse(name)
    if parsed is None:
        return False
    return os.path.lexists(layout.claim(_entry_id(parsed[1]), parsed[2], finishing=True))


def remove(stage_path: Path | None) -> None:
    if stage_path is not None:
        try:
            stage_path.unlink()
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ESTALE):
                raise


# -- completing the end of a stalled holder --------------------------------------


def complete(layout: Layout, job_id: str, found: tuple[Path, Path] | None, own_claim: str, owner: tuple[int, int]) -> bool:
    """Publish ``found``, the (stage, target) that the stalled holder of a
    fenced claim of ``job_id`` staged (``find``), now that this processor
    holds the claim as ``own_claim``; True if the claim is done with
    (published now, or by its holder meanwhile)."""
    try:
        if found is None:
            raise FileNotFoundError(job_id)
        stage_path, target = found
        data = files.read_untrusted(stage_path, single_link=False)[0]
        linked = publish(stage_path, target)
    except FileNotFoundError:
        # No stage: published and removed by its holder just now, or never made.
        return newer_state(layout, job_id) or _claimed_elsewhere(layout, job_id, own_claim)
    except files.Unusable:
        return False
    if linked and is_record(target):
        _after_record(layout, job_id, data, owner)
    remove(stage_path)
    return True


def _after_record(layout: Layout, job_id: str, data: bytes, owner: tuple[int, int]) -> None:
    """What ``Claim.finish`` does around a record: queue its follow-up (at
    most once while it is pending, by its unique key) and give back its key."""
    from . import unique
    from .followup import queue_follow_up

    try:
        record = files.load_json(data)
        job, result = Job.from_json(record), Result.from_json(record.get("result"))
    except (ValueError, AttributeError):
        return
    queue_follow_up(layout, job, result, owner)
    unique.give_back(layout, job.unique, unique.key_owner(owner[0]), job_id)


def _claimed_elsewhere(layout: Layout, job_id: str, own_claim: str) -> bool:
    try:
        names = os.listdir(layout.running)
    except FileNotFoundError:
        return False
    return any(n.startswith(f"{job_id}@") and n != own_claim for n in names)


def newer_state(layout: Layout, job_id: str) -> bool:
    """Whether the job exists outside ``running/`` (a record, queued, delayed)."""
    for _, path in layout.candidates(job_id):
        if files.lstat(path) is not None:
            return True
    return layout.scan(State.DELAYED, job_id) is not None
