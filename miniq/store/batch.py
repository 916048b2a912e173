"""Bulk enqueue: many jobs of one type, durable as a whole, all or nothing.

``miniq enqueue --stdin NAME`` reads one job per line: its arguments in
POSIX shell quoting (``shlex.split``: ``a 'b c' "d\\"e"`` gives three
arguments; blank lines and lines starting with ``#`` are skipped).  With
``--stdin-json`` each line is a JSON object: ``args`` (a list of strings)
and optionally ``priority``, ``retries`` and ``unique_key``, which override
the command line's options for that job.

All or nothing on bad input: every line is parsed and every job built and
checked before anything is written; a bad line refuses the whole batch with
its line number.

Durability, and why this way: each job file is written to a staging file in
``tmp/`` without its own fsync; then one ``syncfs(2)`` flushes every staged
file of the file system at once; then each file is renamed into ``queue/``
(or ``delayed/``) and the directories are flushed once.  The renames are the
only moment a job becomes visible, and they follow the flush, so no crash
shows a job whose bytes are not on disk; one syncfs costs about what one
fsync does, where a fsync per file would cost ten thousand.  A crash before
the renames leaves staging files only (removed as a dead writer's,
claims.py); a crash during them leaves the jobs renamed so far queued, and
the command never printed their ids.  Where ``syncfs`` is missing, every
file is fsynced instead.
"""

from __future__ import annotations

import ctypes
import json
import os
import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import files
from ..core.errors import BadInput, os_failure
from ..core.files import MAX_FILE, dump
from ..core.job import Job
from ..core.limits import Limits
from ..core.schedule import MAX_PRIORITY, MAX_RETRIES, MIN_PRIORITY, Schedule
from .layout import delayed_name, queue_name

if TYPE_CHECKING:
    from .policy import Admitted
    from .queue import Queue

MAX_BATCH = 1_000_000


@dataclass(frozen=True)
class Item:
    """One job of a batch: its arguments and the options it overrides."""

    argv: tuple[str, ...]
    priority: int | None = None
    retries: int | None = None
    unique: str | None = None


def parse_lines(lines: Iterable[str], as_json: bool) -> list[Item]:
    """The batch in ``lines``; ``BadInput`` naming the first bad line."""
    items = []
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\n")
        if not text.strip() or (not as_json and text.lstrip().startswith("#")):
            continue
        try:
            items.append(_parse_json(text) if as_json else Item(tuple(shlex.split(text))))
        except (ValueError, BadInput) as e:
            why = e.message if isinstance(e, BadInput) else str(e)
            raise BadInput(f"line {number}: {why}; nothing was queued") from None
        if len(items) > MAX_BATCH:
            raise BadInput(f"more than {MAX_BATCH} jobs in one batch; split it")
    return items


def _whole(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{key!r} must be a whole number from {low} to {high}")
    return value


def _parse_json(text: str) -> Item:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object such as {"args": ["a", "b"]}')
    unknown = set(data) - {"args", "priority", "retries", "unique_key"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}: expected args, priority, retries, unique_key")
    args = data.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("'args' must be a list of strings")
    unique = data.get("unique_key")
    if unique is not None and not isinstance(unique, str):
        raise ValueError("'unique_key' must be a string")
    return Item(tuple(args), _whole(data, "priority", MIN_PRIORITY, MAX_PRIORITY), _whole(data, "retries", 0, MAX_RETRIES), unique)


def _syncfs(directory: Path) -> bool:
    """Flush the file system holding ``directory``; False if syncfs is missing."""
    libc = files.libc()
    if not hasattr(libc, "syncfs"):
        return False
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(directory))
    finally:
        os.close(fd)
    return True


def enqueue_batch(
    queue: Queue, name: str, items: list[Item], limits: Limits = Limits(), schedule: Schedule = Schedule()
) -> list[tuple[str, bool]]:
    """Queue every item as a job of type ``name``; returns (id, added) in
    order.  A job whose unique key an unfinished job holds is not added: the
    id is that job's.  See the module comment."""
    from .policy import Ask, Door, admit

    owner = (queue.caller.uid, queue.caller.gid) if queue.caller is not None else None
    asks = [Ask(name, item.argv, limits, _schedule(schedule, item), (), item.unique) for item in items]
    admitted = admit(queue.layout, Door.BATCH, asks, queue.owner(owner[0] if owner else None))
    queue.check_dependencies(schedule)
    jobs = _build(name, items, limits, schedule, owner)
    queue.ensure_layout()
    layout, now = queue.layout, time.time()
    staged: list[tuple[str, tuple[Path, str]]] = []
    tmp_fd = os.open(layout.tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    published = False
    try:
        for number, (job_id, data, s) in enumerate(jobs, 1):
            if len(data) > MAX_FILE:
                raise BadInput(f"job {number} is {len(data)} bytes as a file, over the {MAX_FILE} bytes miniq accepts; nothing was queued")
            if s.waits(now):
                final = (layout.delayed, delayed_name(job_id, None if s.after else s.not_before))
            else:
                final = (layout.queue, queue_name(s.priority, job_id))
            staged.append((_stage(tmp_fd, final[1], data, owner), final))
        if not _syncfs(layout.tmp):
            for name_, _ in staged:
                _fsync(tmp_fd, name_)
        result = _publish(queue, admitted, tmp_fd, jobs, staged, owner)
        published = True
    except OSError as e:
        raise os_failure(f"cannot write to the queue under {queue.root}", e) from None
    finally:
        if not published:
            for name_, _ in staged:
                try:
                    os.unlink(name_, dir_fd=tmp_fd)
                except FileNotFoundError:
                    pass
        os.close(tmp_fd)
    return result


def _build(
    name: str, items: list[Item], limits: Limits, schedule: Schedule, owner: tuple[int, int] | None
) -> list[tuple[str, bytes, Schedule]]:
    """(id, file contents, schedule) of every job (the gate judged them all).

    The fields all jobs share are made once: a job file is the shared part
    with its own id, arguments, submission time and options (job.py)."""
    from ..core.job import new_id
    from ..core.timeparse import now_iso

    base = Job.new(name, (), limits, schedule, uid=owner[0] if owner else None).to_json()
    built: list[tuple[str, bytes, Schedule]] = []
    for item in items:
        argv = item.argv  # checked by the gate (policy.py)
        job_id = new_id()
        while built and job_id <= built[-1][0]:
            job_id = new_id()  # ids sort in submission order: the next microsecond
        data = dict(base, id=job_id, argv=list(argv), submitted=now_iso())
        s = _schedule(schedule, item)
        if s is not schedule:
            data.pop("schedule", None)
            if s.to_json():
                data["schedule"] = s.to_json()
        if item.unique is not None:
            data["unique"] = item.unique
        built.append((data["id"], dump(data), s))
    return built


def _schedule(schedule: Schedule, item: Item) -> Schedule:
    """The schedule of one job of the batch: the command line's, with the item's overrides."""
    if item.priority is None and item.retries is None:
        return schedule
    return Schedule(schedule.priority if item.priority is None else item.priority, schedule.not_before, schedule.after,
                    schedule.retries if item.retries is None else item.retries)  # fmt: skip


def _publish(
    queue: Queue,
    admitted: Admitted,
    tmp_fd: int,
    jobs: list[tuple[str, bytes, Schedule]],
    staged: list[tuple[str, tuple[Path, str]]],
    owner: tuple[int, int] | None,
) -> list[tuple[str, bool]]:
    from . import unique as keys

    assert len(admitted.asks) == len(jobs)
    layout = queue.layout
    key_owner = owner[0] if owner else os.geteuid()
    uniques = {job_id: json.loads(data).get("unique") for job_id, data, _ in jobs if b'"unique"' in data}
    result: list[tuple[str, bool]] = []
    dirs: dict[Path, int] = {}
    try:
        for (job_id, _, s), (name, (directory, final)) in zip(jobs, staged):
            key = uniques.get(job_id)
            if key is not None:
                try:
                    keys.take(layout, key, key_owner, job_id, owner)
                except keys.AlreadyQueued as e:
                    os.unlink(name, dir_fd=tmp_fd)
                    result.append((e.job_id, False))
                    continue
            if s.priority:
                layout.priority_marker(s.priority).touch()
            if directory not in dirs:
                dirs[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            os.rename(name, final, src_dir_fd=tmp_fd, dst_dir_fd=dirs[directory])
            result.append((job_id, True))
        for fd in dirs.values():
            os.fsync(fd)
    finally:
        for fd in dirs.values():
            os.close(fd)
    if layout.delayed in dirs:
        queue.wake()
    return result


def _stage(tmp_fd: int, name: str, data: bytes, owner: tuple[int, int] | None) -> str:
    """A staging file in ``tmp/`` holding ``data`` (not flushed: see the module comment)."""
    staging = files.staging_name(name)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=tmp_fd)
    try:
        files.fill(fd, data, 0o600, owner, sync=False)
    finally:
        os.close(fd)
    return staging


def _fsync(tmp_fd: int, name: str) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=tmp_fd)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
