"""How ``miniq list`` and ``miniq show`` read to a person.

Every cell and value is shown through the one face (face.py): a job's
arguments, its name, a reason, a host came from users, and one line of the
table or of a record stays one line whatever they hold."""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from ..core.face import terminal_width, visible
from ..core.job import State
from ..core.timeparse import relative
from ..store.records import Record

COLUMNS = ("ID", "STATE", "NAME", "WHEN", "RESULT", "ARGS")


def when(record: Record) -> str:
    """What happened when, relative to now: "queued 5m ago", "due in 2h"..."""
    job, result = record.job, record.result
    if record.state is State.RUNNING:
        lease = record.lease
        return f"on {lease.host}" if lease else "running"
    if result and result.ended:
        return f"ended {relative(result.ended)}"
    if record.held:
        return "held (paused or at cap)"
    if record.state is State.DELAYED and job and job.schedule.not_before:
        from ..core.timeparse import iso

        return f"due {relative(iso(job.schedule.not_before))}"
    if record.state is State.DELAYED:
        return "after deps"
    if job:
        return f"queued {relative(job.submitted)}"
    return ""


def outcome(record: Record) -> str:
    if record.lease and record.lease.expired:
        return f"lease expired {record.lease.age:.0f}s ago" if record.lease.age is not None else "lease expired"
    result = record.result
    if record.problem and not result:
        return "unreadable"
    if not result:
        return ""
    return f"exit {result.exit_code}" if result.outcome.value == "exited" else result.outcome.value


def render(items: Iterable[Record | tuple[str, int]]) -> str:
    width = terminal_width()
    lines = [COLUMNS]
    notes = []
    for item in items:
        if isinstance(item, tuple):
            notes.append(f"... and {item[1]} more {item[0]} (--all to list them)")
            continue
        argv = list(item.job.argv) if item.job else []
        cells = (item.id, item.state.label, item.name or "?", when(item), outcome(item), shlex.join(argv))
        lines.append((visible(cells[0]), visible(cells[1]), visible(cells[2]), visible(cells[3]), visible(cells[4]), visible(cells[5])))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for line in lines:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:5])) + "  " + line[5]
        out.append(text if len(text) <= width else text[: max(width - 1, 0)] + "…")
    return "\n".join(out + notes)


def describe_record(record: Record) -> str:
    from ..store.listing import row

    r = row(record)
    out = []
    for key in ("id", "name", "state", "argv", "submitted", "priority", "not_before", "after", "retries"):
        if r[key] not in (None, [], 0) or key in ("id", "name", "state", "argv"):
            out.append(f"{key + ':':12} {r[key]}")
    if record.lease:
        freshness = "expired" if record.lease.expired else "live"
        age = f", renewed {record.lease.age:.0f} s ago" if record.lease.age is not None else ""
        out.append(f"{'host:':12} {record.lease.host} (lease {freshness}{age})")
    if record.held:
        out.append(f"{'held:':12} its job type is paused (miniq resume) or at its cap of jobs at once ([job:NAME] parallel)")
    for key in ("unique", "on_success", "on_failure", "follows"):
        if r[key] is not None:
            out.append(f"{key + ':':12} {r[key]}")
    if record.job and not record.job.limits.is_empty():
        out.append(f"{'limits:':12} {record.job.limits.to_json()}")
    if record.problem:
        out.append(f"{'problem:':12} {record.problem}")
    attempts = record.job.attempts if record.job else ()
    for n, attempt in enumerate(attempts, 1):
        out.append(f"attempt {n}:   {attempt.describe()} ({attempt.ended or ''})")
    result = record.result
    if result:
        data = result.to_json()
        for key in ("outcome", "exit_code", "signal", "reason", "started", "ended", "duration", "host", "unit",
                    "cpu_usec", "memory_peak", "max_rss", "output_lines", "output_dropped"):  # fmt: skip
            if data.get(key) is not None:
                out.append(f"{key + ':':12} {data[key]}")
    return "\n".join(visible(line) for line in out)
