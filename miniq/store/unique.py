"""Unique jobs: at most one job per key queued, delayed or running.

``miniq enqueue --unique`` (key: the job's name and arguments) or
``--unique-key KEY`` holds the key while the job is not finished.  The key is
a file, ``unique/HASH`` (HASH: SHA-256 of the owner's uid and the key, so
users of a shared queue never meet each other's keys), holding the job's id.
It is made with link(2), which fails if the name exists, on one machine or
over NFS: of two enqueues racing for a key, one makes it and the other reads
the winner's id.  The key is taken before the job file is published, and
given back (claims.py, ``Claim.finish``) after its record is.

A key whose job has finished, or never got published (its enqueue died in
between), is stale: after ``GRACE`` seconds (an enqueue publishes its job
within milliseconds of taking the key) the next enqueue removes it.  Removal
renames the key to a name of its own first and checks that it moved the
stale key, not a fresh one another enqueue made meanwhile (then it puts that
one back), so two enqueues racing over a stale key still make one job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..core import files
from ..core.errors import MiniqError
from ..core.files import Unusable, read_untrusted
from ..core.job import State
from .layout import Layout, is_id

GRACE = 10.0  # seconds a key may name a job not yet published
LOOKS = 3  # a job moving between states is looked for again before it counts as gone


class AlreadyQueued(MiniqError):
    """A job with this ``--unique`` key is queued, delayed or running: ``job_id``."""

    exit_code = 7

    def __init__(self, job_id: str, key: str) -> None:
        super().__init__(f"job {job_id} with the same unique key is queued, delayed or running; no job added")
        self.job_id, self.key = job_id, key


def key_owner(file_owner: int) -> int:
    """Whose keys a job's are, from the owner of its file: in a root
    processor or helper the file's owner (the submitter), else ours."""
    return file_owner if os.geteuid() == 0 else os.geteuid()


def _sha256(text: str) -> str:
    import hashlib  # (OpenSSL) only for jobs with a key, not for every enqueue

    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def implicit_key(name: str, argv: tuple[str, ...] | list[str]) -> str:
    """The key of ``--unique``: the job type and its arguments."""
    return f"{name}:{_sha256(chr(0).join([name, *argv]))}"


def key_path(layout: Layout, key: str, owner: int) -> Path:
    return layout.unique / _sha256(f"{owner}\0{key}")


def _holder(path: Path) -> tuple[str, float] | None:
    """(job id, ctime) of a key file; None if it is gone.  The id is "" for a
    key miniq did not write (a FIFO, a link, garbage): stale once GRACE has passed.

    The ctime, not the mtime: only the file system sets it (see claims.py's
    ``clean_tmp`` for what NFS shows as the mtime of a file being created)."""
    try:
        data, st = read_untrusted(path, cap=256, single_link=False)
    except FileNotFoundError:
        return None
    except Unusable:
        try:
            return ("", os.lstat(path).st_ctime)
        except FileNotFoundError:
            return None
    text = data.decode("ascii", "replace").strip()
    return (text if is_id(text) else "", st.st_ctime)


def _server_now(layout: Layout) -> float:
    """The time by the file server's clock, which set the key's ctime: another
    machine sharing the root over NFS may run minutes ahead or behind."""
    from .clock import ServerClock

    return ServerClock(layout).now()


def unfinished(layout: Layout, job_id: str) -> bool | None:
    """Whether job ``job_id`` is queued, delayed or running; None if it is
    nowhere (looked for ``LOOKS`` times: jobs move between states)."""
    for _ in range(LOOKS):
        found = [state for state, path in layout.candidates(job_id) if os.path.lexists(path)]
        if any(state.is_final for state in found):
            return False
        if found or layout.scan(State.DELAYED, job_id) is not None or layout.scan(State.RUNNING, job_id) is not None:
            return True
        files.revalidate(layout.running)
    return None


def take(layout: Layout, key: str, owner: int, job_id: str, chown: tuple[int, int] | None = None) -> None:
    """Hold ``key`` for ``job_id``; ``AlreadyQueued`` if an unfinished job holds it."""
    path = key_path(layout, key, owner)
    for _ in range(10):
        try:
            files.write_durably(layout.tmp, path, job_id.encode() + b"\n", owner=chown, replace=False)
            return
        except FileExistsError:
            pass
        found = _holder(path)
        if found is None:
            continue  # removed meanwhile: try again
        holder, changed = found
        if holder == job_id:
            return
        state = unfinished(layout, holder) if holder else None
        age = _server_now(layout) - changed if state is None else 0.0
        if state or (state is None and holder and age < GRACE):
            raise AlreadyQueued(holder, key)  # unfinished, or being published
        if state is None and age < GRACE:
            time.sleep(0.01)  # being written: look again
            continue
        release(layout, path, holder)
    raise MiniqError(f"could not take the unique key {key!r}: it kept changing under {layout.unique}; try again")


def release(layout: Layout, path: Path, job_id: str) -> None:
    """Remove the key at ``path`` if (and only if) it names ``job_id``."""
    found = _holder(path)
    if found is None or found[0] != job_id:
        return
    aside = layout.tmp / files.staging_name(f"unique-{path.name}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = _holder(aside)
        if moved is not None and moved[0] != job_id:
            # A fresh key another enqueue made after we looked: put it back.
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # a third one took the key meanwhile; theirs stands
    finally:
        aside.unlink(missing_ok=True)
    files.fsync_dir(layout.unique)


def give_back(layout: Layout, key: str | None, owner: int, job_id: str) -> None:
    """Give back the key of a job that finished (a no-op without one)."""
    if key is not None:
        try:
            release(layout, key_path(layout, key, owner), job_id)
        except OSError:
            pass  # the next enqueue with this key finds it stale
