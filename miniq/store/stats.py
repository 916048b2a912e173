"""``miniq stats``: the queue in figures, for people and for Prometheus.

Figures: jobs per state and job type (held jobs, whose type is paused or at
its cap, count as ``held``, not ``delayed``); the age of the oldest queued
job; running jobs per host; and, over a window (default 24 h), finished jobs
per type, final state and outcome, and their run times (count, sum, median,
90th percentile, maximum).  Pauses and per-type caps are included.

Cost: every unfinished job's file is read once (for its type), and every
record published within the window (records older than the window are
skipped by their modification time without being read).

``prometheus_text`` writes the Prometheus text exposition format (version
0.0.4) for node_exporter's textfile collector, with names and labels after
Prometheus' conventions (``miniq_`` prefix, base units, ``_seconds``); the
windowed figures are gauges, as they go down when old runs leave the window.
``write_textfile`` publishes it atomically (write, fsync, rename in the
file's own directory, which the collector ignores: only ``*.prom`` is read).
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import files
from ..core.job import State
from ..core.proc import Claimer
from ..core.timeparse import timestamp
from . import records
from .layout import parse_claim_name
from .queue import Queue

DEFAULT_WINDOW = 24 * 3600.0
UNFINISHED = ("queued", "delayed", "held", "running")


@dataclass
class Stats:
    """What ``collect`` found; see the module comment."""

    generated: float
    window: float
    jobs: Counter[tuple[str, str]] = field(default_factory=Counter)  # (state, job type) -> count
    finished: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (job type, state, outcome) -> count
    durations: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # job type -> seconds
    oldest_queued: float | None = None  # Unix time the oldest queued job was submitted
    running_by_host: Counter[str] = field(default_factory=Counter)
    paused: list[str] = field(default_factory=list)  # "@all" and/or job types
    slots: dict[str, tuple[int, int]] = field(default_factory=dict)  # job type -> (held, count)
    #: Only jobs per state, from the names (collect's ``counts_only``).
    counts_only: bool = False
    #: hours before ``generated`` (0: the last hour) -> [done, failed, run times]
    hourly: dict[int, tuple[int, int, list[float]]] = field(default_factory=dict)

    @property
    def hours(self) -> int:
        """The window in whole hours, rounded up: ``finished_by_hour``'s length."""
        return int(-(-self.window // 3600))

    def count_hour(self, ended: str | None, done: bool, duration: float | None) -> None:
        try:
            ago = int((self.generated - timestamp(ended)) // 3600) if ended else 0
        except ValueError:
            return
        ago = 0 if ago < 0 else min(ago, self.hours - 1)  # a clock ahead: the last hour; the window's edge: its first
        d, f, times = self.hourly.get(ago, (0, 0, []))
        if duration is not None:
            times.append(duration)
        self.hourly[ago] = (d + done, f + (not done), times)

    @property
    def oldest_queued_age(self) -> float | None:
        return None if self.oldest_queued is None else max(self.generated - self.oldest_queued, 0.0)

    def to_json(self) -> dict[str, Any]:
        per_type: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(UNFINISHED, 0))
        for (state, name), count in self.jobs.items():
            if name:  # "": counted by state only (collect's counts_only)
                per_type[name][state] = count
        totals = {state: sum(c for (s, _), c in self.jobs.items() if s == state) for state in UNFINISHED}
        finished: dict[str, dict[str, Any]] = {}
        for (name, state, outcome), count in sorted(self.finished.items()):
            entry = finished.setdefault(name, {"done": 0, "failed": 0, "outcomes": {}})
            entry[state] += count
            entry["outcomes"][outcome] = entry["outcomes"].get(outcome, 0) + count
        for name, entry in finished.items():
            entry["duration_seconds"] = _summary(self.durations.get(name, []))
        return {
            "generated": self.generated,
            "window_seconds": self.window,
            "jobs": totals,
            "jobs_by_type": dict(sorted(per_type.items())),
            "oldest_queued_age_seconds": self.oldest_queued_age,
            "running_by_host": dict(sorted(self.running_by_host.items())),
            "finished_by_type": finished,
            "paused": sorted(self.paused),
            "slots": {name: {"used": used, "count": count} for name, (used, count) in sorted(self.slots.items())},
            "finished_by_hour": [] if self.counts_only else [self._hour(h) for h in range(self.hours)],
            "counts_only": self.counts_only,
        }

    def _hour(self, ago: int) -> dict[str, Any]:
        """Finished jobs of one hour of the window (``ago`` hours back), oldest last."""
        done, failed, times = self.hourly.get(ago, (0, 0, []))
        return {"hours_ago": ago, "done": done, "failed": failed, "duration_seconds": _summary(times)}


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "sum": 0.0, "p50": None, "p90": None, "max": None}
    return {"count": len(values), "sum": round(sum(values), 6), "p50": _quantile(values, 0.5), "p90": _quantile(values, 0.9),
            "max": max(values)}  # fmt: skip


def collect(queue: Queue, window: float = DEFAULT_WINDOW, now: float | None = None, counts_only: bool = False) -> Stats:
    """The figures of ``queue`` (only the caller's jobs, through the helper).

    ``counts_only``: jobs per state and running jobs per host from the
    entries' names alone, no file read (a first look at a long queue); no
    job types, oldest age or finished jobs."""
    from . import slots
    from .pause import paused_names

    now = time.time() if now is None else now
    stats = Stats(now, window, counts_only=counts_only)
    _unfinished(queue, stats)
    stats.paused = sorted(paused_names(queue.layout))
    stats.slots = slots.in_use(queue.layout, None if queue.caller is None else queue.caller.uid)
    if not counts_only:
        _finished(queue, stats, now - window)
    return stats


def _unfinished(queue: Queue, stats: Stats) -> None:
    for state in (State.QUEUED, State.DELAYED, State.RUNNING):
        for job_id, path in queue.entries(state):
            if not queue.visible(path):
                continue
            if state is State.RUNNING:
                parsed = parse_claim_name(path.name)
                holder = Claimer.parse(parsed[1]) if parsed else None
                stats.running_by_host[holder.host if holder else "?"] += 1
            if stats.counts_only:
                held = state is State.DELAYED and path.name.startswith("held-")
                stats.jobs[("held" if held else state.label, "")] += 1
                continue
            try:
                record = records.read(path, state, job_id)
            except OSError:
                continue
            label = "held" if record.held else state.label
            stats.jobs[(label, record.name or "?")] += 1
            if state is State.QUEUED and record.job is not None:
                try:
                    submitted = timestamp(record.job.submitted)
                except ValueError:
                    continue
                if stats.oldest_queued is None or submitted < stats.oldest_queued:
                    stats.oldest_queued = submitted


def _finished(queue: Queue, stats: Stats, cutoff: float) -> None:
    for state in (State.DONE, State.FAILED):
        for job_id, path in queue.entries(state):
            try:
                if os.lstat(path).st_mtime < cutoff or not queue.visible(path):
                    continue
                record = records.read(path, state, job_id)
            except OSError:
                continue
            result = record.result
            if result is None or (result.ended and _ended_before(result.ended, cutoff)):
                continue
            name = record.name or "?"
            stats.finished[(name, state.label, result.outcome.value)] += 1
            if result.duration is not None:
                stats.durations[name].append(result.duration)
            stats.count_hour(result.ended, state is State.DONE, result.duration)


def _ended_before(ended: str, cutoff: float) -> bool:
    try:
        return timestamp(ended) < cutoff
    except ValueError:
        return False


# -- Prometheus ------------------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}" if labels else ""


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def prometheus_text(stats: Stats, root: str) -> str:
    """The figures in the Prometheus text format (module comment)."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, dict[str, str], float]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for suffix, labels, value in samples:
            out.append(f"{name}{suffix}{_labels(root=root, **labels)} {_number(value)}")

    metric("miniq_jobs", "gauge", "Unfinished jobs by state (queued, delayed, held, running) and job type.",
           [("", {"state": s, "job": n}, c) for (s, n), c in sorted(stats.jobs.items())])  # fmt: skip
    age = stats.oldest_queued_age
    metric("miniq_oldest_queued_job_age_seconds", "gauge", "Seconds since the oldest queued job was submitted (0 if none is queued).",
           [("", {}, round(age, 3) if age is not None else 0)])  # fmt: skip
    metric("miniq_running_jobs", "gauge", "Running jobs by the host that runs them.",
           [("", {"host": h}, c) for h, c in sorted(stats.running_by_host.items())])  # fmt: skip
    metric("miniq_window_seconds", "gauge", "The window of the miniq_finished_jobs and miniq_job_duration_seconds figures.",
           [("", {}, stats.window)])  # fmt: skip
    metric("miniq_finished_jobs", "gauge", "Jobs that finished within the window, by job type, final state and outcome.",
           [("", {"job": n, "state": s, "outcome": o}, c) for (n, s, o), c in sorted(stats.finished.items())])  # fmt: skip
    samples: list[tuple[str, dict[str, str], float]] = []
    for name, values in sorted(stats.durations.items()):
        for q in (0.5, 0.9, 1.0):
            samples.append(("", {"job": name, "quantile": str(q)}, _quantile(values, q)))
        samples.append(("_sum", {"job": name}, round(sum(values), 6)))
        samples.append(("_count", {"job": name}, len(values)))
    metric("miniq_job_duration_seconds", "summary", "Run time of the jobs that finished within the window, by job type.", samples)
    metric("miniq_paused", "gauge", 'Pauses in force: job="@all" for the whole queue, else a job type.',
           [("", {"job": p}, 1) for p in stats.paused])  # fmt: skip
    metric("miniq_job_type_slots", "gauge", "Jobs of a type that may run at once over every machine ([job:NAME] parallel).",
           [("", {"job": n}, count) for n, (_, count) in sorted(stats.slots.items())])  # fmt: skip
    metric("miniq_job_type_slots_used", "gauge", "Slots of a job type held by running jobs.",
           [("", {"job": n}, used) for n, (used, _) in sorted(stats.slots.items())])  # fmt: skip
    metric("miniq_stats_generated_timestamp_seconds", "gauge", "When these figures were collected (Unix time).",
           [("", {}, round(stats.generated, 3))])  # fmt: skip
    return "\n".join(out) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Publish ``text`` at ``path`` atomically, readable by node_exporter (0644)."""
    path = Path(path)
    if not path.name.endswith(".prom"):
        from ..core.errors import BadInput

        raise BadInput(f"invalid Prometheus file {str(path)!r}: node_exporter's textfile collector reads only files ending in .prom")
    files.write_durably(path.parent, path, text.encode(), mode=0o644)
