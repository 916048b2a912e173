"""Pausing the queue, or some job types: no new job of them starts.

A pause is a file in ``ROOT/paused/``: ``@all`` for the whole queue,
``NAME`` for job type NAME (a job name never starts with ``@``).  Being in
the root, a pause survives reboots and holds on every machine sharing the
root.  It holds the file's owner, time and host for ``list``/``doctor``.

A processor looks at the pauses before it starts each job.  A job it claims
whose type is paused is *held*: moved to ``delayed/held-ID.json``
(layout.py), out of ``queue/``, so the path unit does not start the
processor again and again for jobs that may not run.  ``resume`` removes the
pause and wakes the processor (``queue/wake``), which moves held jobs whose
type may run again back to ``queue/`` under their old names: they keep their
place in the order.  Machines sharing the root over NFS, where no inotify
event crosses machines, see the resume at their next timer run.  Running
jobs are never stopped by a pause.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

from ..core import files
from ..core.job import check_name, hostname, user_name
from ..core.timeparse import now_iso
from .layout import Layout

ALL = "@all"


class Pause(NamedTuple):
    """One pause: of everything (``name`` None) or of one job type."""

    name: str | None
    by: str
    at: str
    host: str

    @property
    def what(self) -> str:
        return "the whole queue" if self.name is None else f"job type '{self.name}'"


def _entry(name: str | None) -> str:
    return ALL if name is None else check_name(name)


def pause(layout: Layout, names: list[str] | tuple[str, ...] = ()) -> list[Pause]:
    """Pause job types ``names``, or the whole queue without names."""
    for d in (layout.tmp, layout.paused):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    made = []
    wanted: list[str | None] = list(names) if names else [None]
    for name in wanted:
        entry = _entry(name)
        data = {"by": user_name(os.geteuid()), "at": now_iso(), "host": hostname()}
        files.write_durably(layout.tmp, layout.paused / entry, json.dumps(data).encode() + b"\n")
        made.append(Pause(name, data["by"], data["at"], data["host"]))
    return made


def resume(layout: Layout, names: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Undo pauses (of ``names``, or every pause without names); wakes the processor.
    Returns what was resumed."""
    entries = [_entry(n) for n in names] if names else sorted(_names(layout))
    done = []
    for entry in entries:
        try:
            os.unlink(layout.paused / entry)
            done.append(entry)
        except FileNotFoundError:
            continue
    if done:
        files.fsync_dir(layout.paused)
        try:
            layout.wake.touch()
        except OSError:
            pass  # the timer runs the processor within a minute anyway
    return done


def _names(layout: Layout) -> list[str]:
    files.revalidate(layout.paused)
    try:
        return [n for n in os.listdir(layout.paused) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def paused_names(layout: Layout) -> frozenset[str]:
    """What is paused now: ``ALL`` and/or job type names.  One listing."""
    return frozenset(_names(layout))


def is_paused(paused: frozenset[str], name: str) -> bool:
    return ALL in paused or name in paused


def pauses(layout: Layout) -> list[Pause]:
    """Every pause with who made it and when (for list, show and doctor)."""
    found = []
    for entry in sorted(_names(layout)):
        try:
            data = json.loads(files.read_untrusted(layout.paused / entry, cap=4096)[0])
        except (OSError, ValueError, files.Unusable):
            data = {}
        if not isinstance(data, dict):
            data = {}
        found.append(Pause(None if entry == ALL else entry, str(data.get("by", "?")), str(data.get("at", "?")), str(data.get("host", "?"))))
    return found
