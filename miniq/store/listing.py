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

from ..core.job import State, user_name
from . import records
from .clock import ServerClock
from .layout import WAKE
from .queue import Queue, _id_of
from .records import Record

ROW_KEYS = (
    "id", "name", "state", "argv", "submitted", "priority", "not_before", "after", "retries",
    "attempts", "outcome", "exit_code", "signal", "reason", "started", "ended", "duration", "host", "lease",
    "held", "unique", "on_success", "on_failure", "follows", "owner",
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
        "held": record.held,
        "unique": job.unique if job else None,
        "on_success": job.on_success if job else None,
        "on_failure": job.on_failure if job else None,
        "follows": job.follows.id if job and job.follows else None,
        "owner": user_name(record.owner),
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


def _listed(queue: Queue, state: State) -> list[str]:
    try:
        names = os.listdir(queue.dir(state))
    except FileNotFoundError:
        return []
    return [n for n in names if n[0] != "." and n != WAKE]


def _entries(
    queue: Queue, states: tuple[State, ...], final: bool, limit: int | None, ordered: bool
) -> tuple[Iterator[tuple[State, str]], int]:
    """The entries of ``states`` to look at, in display order, and how many
    there are.  Names sort as the jobs run (layout.py), and finished records
    by id, so choosing the first ``limit`` costs one listing and no parsing;
    unordered (``list --all --json``) streams the directory as it is read."""
    if not ordered:

        def stream() -> Iterator[tuple[State, str]]:
            for state in states:
                try:
                    with os.scandir(queue.dir(state)) as it:
                        for entry in it:
                            yield state, entry.name
                except FileNotFoundError:
                    continue

        return stream(), 0
    per_state = {state: _listed(queue, state) for state in states}
    total = sum(len(names) for names in per_state.values())
    if queue.caller is not None:  # the system queue's helper: only the caller's own
        per_state = {s: [n for n in names if queue.visible(queue.dir(s) / n)] for s, names in per_state.items()}
        total = sum(len(names) for names in per_state.values())
    pick = heapq.nlargest if final else heapq.nsmallest
    tagged = [(name, state) for state, names in per_state.items() for name in (names if limit is None else pick(limit, names))]
    chosen = sorted(tagged, reverse=final) if limit is None else pick(limit, tagged)
    return ((state, name) for name, state in chosen), total


def iterate(
    queue: Queue,
    states: Iterable[State],
    name: str | None = None,
    limit: int | None = DEFAULT_SHOWN,
    ordered: bool = True,
    offset: int = 0,
    owner: int | None = None,
) -> Iterator[Record | tuple[str, int]]:
    """Records to show in display order (finished ones oldest first), each
    group followed by (group, count not shown) when it holds more than
    ``limit`` (None: show everything; ``ordered=False`` then streams them as
    the directories list them, with memory that stays flat).  ``offset``
    skips that many of each group first, in the order they are chosen
    (finished ones newest first): the pages of a long queue.  ``owner``:
    only the jobs of that uid (like ``name``, this reads every record)."""
    wanted = set(states)
    clock = records.server_clock(queue.layout)
    try:
        for group, members in GROUPS:
            chosen_states = tuple(s for s in members if s in wanted)
            if chosen_states:
                cap = None if group == "running" else limit
                yield from _group(queue, group, chosen_states, (name, owner), cap, ordered, offset, clock)
    finally:
        if clock:
            clock.close()


def _group(
    queue: Queue,
    group: str,
    states: tuple[State, ...],
    only: tuple[str | None, int | None],
    cap: int | None,
    ordered: bool,
    offset: int,
    clock: ServerClock | None,
) -> Iterator[Record | tuple[str, int]]:
    """One group of ``iterate``: its records, then (group, count not shown);
    ``only``: a job type and an owner, or None for any."""
    name, owner = only
    filtered = name is not None or owner is not None
    final = group == "finished"
    # Finished records are looked at newest first when only the newest
    # are shown (then reversed); otherwise everything goes in order.
    reverse = final and cap is not None
    skip = offset if cap is not None else 0
    wanted_count = None if cap is None or filtered else cap + skip
    entries, total = _entries(queue, states, reverse, wanted_count, ordered or cap is not None)
    picked: list[Record] = []
    shown = 0
    for state, entry in entries:
        if cap is not None and shown >= cap:
            break
        record = _read(queue, state, entry, clock)
        if record is None or (name is not None and record.name != name) or (owner is not None and record.owner != owner):
            continue
        if skip:
            skip -= 1
            continue
        shown += 1
        if reverse:
            picked.append(record)
        else:
            yield record
    yield from reversed(picked)
    if cap is not None and not filtered and total > shown + offset:
        yield group, total - shown - offset


def _read(queue: Queue, state: State, entry: str, clock: ServerClock | None) -> Record | None:
    job_id = _id_of(state, entry)
    if job_id is None or (queue.caller is not None and not queue.visible(queue.dir(state) / entry)):
        return None
    try:
        return records.read(queue.dir(state) / entry, state, job_id, clock, queue.lease)
    except OSError:
        return None


def select(queue: Queue, states: Iterable[State], name: str | None = None, limit: int | None = DEFAULT_SHOWN) -> Selection:
    chosen = Selection()
    for item in iterate(queue, states, name, limit):
        if isinstance(item, Record):
            chosen.records.append(item)
        else:
            chosen.more[item[0]] = item[1]
    return chosen
