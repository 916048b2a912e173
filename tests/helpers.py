"""Helpers shared by the unit tests: a sink that records journal entries,
job types on real files, and a processor on plain processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from miniq.core.manager import Manager
from miniq.run.processor import Processor, Summary
from miniq.run.runner import PlainRunner
from miniq.store.queue import Queue
from miniq.store.records import Record

PACKAGE = Path(__file__).resolve().parent.parent / "miniq"


def modules() -> dict[str, Path]:
    """Every module of miniq, wings included, by its name under the package
    (``store.queue``, ``cli.main``; the package's own: ``__init__``)."""
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in sorted(PACKAGE.rglob("*.py"))}


def function_node(qualname: str) -> Any:
    """The ``ast`` node of ``wing.module.Class.function`` (or ``wing.module.function``)."""
    import ast

    module = max((m for m in modules() if qualname.startswith(m + ".")), key=len)
    node: ast.AST = ast.parse(modules()[module].read_text())
    for name in qualname[len(module) + 1 :].split("."):
        node = next(n for n in ast.iter_child_nodes(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name)
    return node


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
