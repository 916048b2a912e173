"""Helpers shared by the unit tests: a sink that records journal entries,
job types on real files, and a processor on plain processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from miniq.manager import Manager
from miniq.processor import Processor, Summary
from miniq.queue import Queue
from miniq.records import Record
from miniq.runner import PlainRunner


class ListSink:
    """Records what would go to the journal."""

    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, dict[str, str]]] = []

    def send(self, message: bytes, priority: int, fields: dict[str, str], uid: int | None = None) -> None:
        self.entries.append((message, priority, dict(fields)))

    def output(self, job_id: str, stream: str | None = None) -> list[bytes]:
        return [
            m for m, _, f in self.entries if f.get("MINIQ_JOB_ID") == job_id and "MINIQ_STREAM" in f and stream in (None, f["MINIQ_STREAM"])
        ]

    def events(self, name: str) -> list[dict[str, str]]:
        return [f for _, _, f in self.entries if f.get("MINIQ_EVENT") == name]

    def text(self) -> str:
        return "\n".join(m.decode(errors="replace") for m, _, _ in self.entries)


def write_job(root: Path, name: str, body: str, mode: int = 0o755) -> Path:
    jobs = root / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    path = jobs / f"{name}.job"
    path.write_text(body)
    path.chmod(mode)
    return path


def processor(root: Path, sink: ListSink | None = None, **kw: Any) -> tuple[Processor, list[float]]:
    """A processor on plain processes whose wake timer is recorded, not armed."""
    wakes: list[float] = []
    kw.setdefault("linger", 0.0)
    p = Processor(Queue(root), Manager.USER, runner=PlainRunner(), sink=sink or ListSink(), waker=wakes.append, **kw)
    return p, wakes


def process(root: Path, **kw: Any) -> tuple[ListSink, Summary]:
    sink = ListSink()
    summary = processor(root, sink, **kw)[0].run()
    return sink, summary


def record(root: Path, job_id: str) -> Record:
    return Queue(root).read(job_id)


def result_of(root: Path, job_id: str) -> dict[str, Any]:
    result = record(root, job_id).result
    assert result is not None
    return result.to_json()


Waker = Callable[[float], object]
