"""What ``miniq list`` shows: rows of a stable shape, read only as far as shown.

``row()`` is the shape of one job in ``miniq list --json`` (README, "JSON
output").  ``select()`` picks what a listing shows without reading every
file: queue names sort in run order and record names by id (layout.py), so
the default view reads the running jobs, the first 20 queued and delayed
ones and the 20 newest finished ones, and only counts the rest.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import records
from .job import State
from .queue import Queue, _id_of
from .records import Record

ROW_KEYS = (
    "id", "name", "state", "argv", "submitted", "priority", "not_before", "after", "retries",
    "attempts", "outcome", "exit_code", "signal", "reason", "started", "ended", "duration", "host", "lease",
)  # fmt: skip
DEFAULT_SHOWN = 20


def row(record: Record) -> dict[str, Any]:
    """One job as ``miniq list --json`` prints it; every key always present."""
    job, result = record.job, record.result
    data = record.data
    argv = list(job.argv) if job else data.get("argv") if isinstance(data.get("argv"), list) else []
    submitted = job.submitted if job else data.get("submitted") if isinstance(data.get("submitted"), str) else None
    schedule = job.schedule.to_json() if job else {}
    lease = record.lease
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state.label,
        "argv": argv,
        "submitted": submitted,
        "priority": schedule.get("priority", 0),
        "not_before": schedule.get("not_before"),
        "after": schedule.get("after", []),
        "retries": schedule.get("retries", 0),
        "attempts": len(job.attempts) if job else 0,
        "outcome": result.outcome.value if result else None,
        "exit_code": result.exit_code if result else None,
        "signal": result.signal if result else None,
        "reason": result.reason if result else record.problem,
        "started": result.started if result else None,
        "ended": result.ended if result else None,
        "duration": result.duration if result else None,
        "host": lease.host if lease else result.host if result else None,
        "lease": None if lease is None else "expired" if lease.expired else "live",
    }


@dataclass
class Selection:
    """The records a listing shows, and how many more each group holds
    ("queued", "delayed", "finished")."""

    records: list[Record] = field(default_factory=list)
    more: dict[str, int] = field(default_factory=dict)


GROUPS: tuple[tuple[str, tuple[State, ...]], ...] = (
    ("running", (State.RUNNING,)),
    ("queued", (State.QUEUED,)),
    ("delayed", (State.DELAYED,)),
    ("finished", (State.DONE, State.FAILED)),
)


def _names(queue: Queue, states: tuple[State, ...]) -> list[tuple[str, State, str]]:
    """(sort key, state, name) of every entry of ``states``: finished records
    sort by id across done/ and failed/."""
    found = []
    for state in states:
        try:
            with os.scandir(queue.dir(state)) as it:
                names = [e.name for e in it if not e.name.startswith(".")]
        except FileNotFoundError:
            continue
        found += [(name, state, name) for name in names if _id_of(state, name) and queue.visible(queue.dir(state) / name)]
    return found


def _candidates(names: list[tuple[str, State, str]], final: bool, limit: int | None) -> list[tuple[str, State, str]]:
    """Entries in the order they are looked at: run order for queued and
    delayed, newest first for finished; only as many as may be shown."""
    if limit is None:
        return sorted(names, reverse=final)
    return heapq.nlargest(limit, names) if final else heapq.nsmallest(limit, names)


def iterate(
    queue: Queue, states: Iterable[State], name: str | None = None, limit: int | None = DEFAULT_SHOWN
) -> Iterator[Record | tuple[str, int]]:
    """Records to show in display order (finished ones oldest first), each
    group followed by (group, count not shown) when it holds more than
    ``limit`` (None: show everything)."""
    wanted = set(states)
    clock = records.server_clock(queue.layout)
    try:
        for group, members in GROUPS:
            chosen_states = tuple(s for s in members if s in wanted)
            if not chosen_states:
                continue
            names = _names(queue, chosen_states)
            final = group == "finished"
            cap = None if group == "running" else limit
            picked: list[Record] = []
            shown = 0
            # Finished records are looked at newest first when only the newest
            # are shown (then reversed); otherwise everything streams in order.
            reverse = final and cap is not None
            for _, state, entry in _candidates(names, reverse, cap if name is None else None):
                if cap is not None and shown >= cap:
                    break
                job_id = _id_of(state, entry)
                assert job_id is not None
                try:
                    record = records.read(queue.dir(state) / entry, state, job_id, clock, queue.lease)
                except OSError:
                    continue
                if name is None or record.name == name:
                    shown += 1
                    if reverse:
                        picked.append(record)
                    else:
                        yield record
            yield from reversed(picked)
            if cap is not None and name is None and len(names) > shown:
                yield group, len(names) - shown
    finally:
        if clock:
            clock.close()


def select(queue: Queue, states: Iterable[State], name: str | None = None, limit: int | None = DEFAULT_SHOWN) -> Selection:
    chosen = Selection()
    for item in iterate(queue, states, name, limit):
        if isinstance(item, Record):
            chosen.records.append(item)
        else:
            chosen.more[item[0]] = item[1]
    return chosen
