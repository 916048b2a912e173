"""What ``miniq list``, ``show`` and ``wait`` report, as plain data.

``row()`` is the stable shape of one job in ``miniq list --json`` (README,
"JSON output"); ``exit_status()`` the documented exit status of ``miniq
wait`` for a finished job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .job import Outcome, State
from .queue import Queue

ROW_KEYS = (
    "id", "name", "state", "argv", "submitted", "priority", "not_before", "after", "retries",
    "attempts", "outcome", "exit_code", "signal", "reason", "started", "ended", "duration",
)  # fmt: skip

# Exit statuses of `miniq wait` for jobs that did not simply exit.
WAIT_TIMEOUT = 124  # like timeout(1)
WAIT_NOT_RUN = 125  # not started, rejected, dependency failed, or miniq error
WAIT_CANCELLED = 130
WAIT_OOM = 137  # 128 + SIGKILL, what a shell reports too


def row(record: dict[str, Any]) -> dict[str, Any]:
    """One job as ``miniq list --json`` prints it; every key always present."""
    schedule = record.get("schedule") or {}
    result = record.get("result") or {}
    return {
        "id": record.get("id"),
        "name": record.get("name"),
        "state": record.get("state"),
        "argv": record.get("argv", []),
        "submitted": record.get("submitted"),
        "priority": schedule.get("priority", 0),
        "not_before": schedule.get("not_before"),
        "after": schedule.get("after", []),
        "retries": schedule.get("retries", 0),
        "attempts": len(record.get("attempts", [])),
        "outcome": result.get("outcome"),
        "exit_code": result.get("exit_code"),
        "signal": result.get("signal"),
        "reason": result.get("reason"),
        "started": result.get("started"),
        "ended": result.get("ended"),
        "duration": result.get("duration"),
    }


STATE_ORDER = {State.RUNNING.label: 0, State.QUEUED.label: 1, State.DELAYED.label: 2, State.FAILED.label: 3, State.DONE.label: 3}


def rows(queue: Queue, states: Iterable[State] = tuple(State), name: str | None = None, recent: int | None = 20) -> list[dict[str, Any]]:
    """Jobs to list: all unfinished ones, and the ``recent`` newest finished."""
    found = [row(r) for r in queue.records(tuple(states)) if name is None or r.get("name") == name]
    active = sorted((r for r in found if r["state"] not in ("done", "failed")), key=lambda r: (STATE_ORDER[r["state"]], r["id"]))
    finished = sorted((r for r in found if r["state"] in ("done", "failed")), key=lambda r: r["ended"] or "", reverse=True)
    if recent is not None:
        finished = finished[:recent]
    return active + finished[::-1]


def exit_status(record: dict[str, Any]) -> int:
    """The exit status ``miniq wait`` reports for a finished job."""
    result = record.get("result") or {}
    outcome = result.get("outcome")
    if outcome == Outcome.EXITED.value:
        return int(result.get("exit_code") or 0)
    if outcome == Outcome.SIGNALED.value:
        import signal

        return 128 + int(signal.Signals[result["signal"]])
    return {Outcome.OOM.value: WAIT_OOM, Outcome.TIMEOUT.value: WAIT_TIMEOUT, Outcome.CANCELLED.value: WAIT_CANCELLED}.get(
        str(outcome), WAIT_NOT_RUN
    )


def wait(queue: Queue, job_ids: list[str], poll: float = 0.1, timeout: float | None = None) -> list[dict[str, Any]]:
    """Block until every job is finished; return their records in order."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for job_id in job_ids:
        queue.find(job_id)  # unknown ids fail at once
    while True:
        records = [queue.record(j) for j in job_ids]
        if all(r["state"] in ("done", "failed") for r in records):
            return records
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(poll)


def age(iso: str | None) -> str:
    """``12s``, ``5m``, ``3h``, ``2d`` since (or ``in 5m`` until) an ISO time."""
    if not iso:
        return ""
    delta = time.time() - datetime.fromisoformat(iso).timestamp()
    prefix = "in " if delta < 0 else ""
    delta = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{prefix}{int(delta // size)}{unit}"
    return f"{prefix}{int(delta)}s"
