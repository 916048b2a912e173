"""The processor on real files and real processes, without systemd.

These use ``PlainRunner`` (no scope) and a sink that records journal
entries; the same behaviour is proven with real scopes and the real journal
in tests/integration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import write_job

from miniq.journal import MAX_LINE
from miniq.processor import Processor
from miniq.queue import Queue
from miniq.scope import PlainRunner, Running
from miniq.settings import Manager


class ListSink:
    def __init__(self) -> None:
        self.entries: list[tuple[bytes, int, dict[str, str]]] = []

    def send(self, message: bytes, priority: int, fields: dict[str, str]) -> None:
        self.entries.append((message, priority, dict(fields)))

    def output(self, job_id: str, stream: str | None = None) -> list[bytes]:
        return [
            m for m, _, f in self.entries if f.get("MINIQ_JOB_ID") == job_id and "MINIQ_STREAM" in f and stream in (None, f["MINIQ_STREAM"])
        ]


def process(root: Path) -> tuple[ListSink, object]:
    sink = ListSink()
    summary = Processor(Queue(root), Manager.USER, runner=PlainRunner(), sink=sink).run()
    return sink, summary


def record(root: Path, job_id: str) -> dict[str, object]:
    return Queue(root).record(job_id)


def test_runs_jobs_in_order_with_their_arguments(root: Path) -> None:
    q = Queue(root)
    a = q.enqueue("echo", ["Title", "This is a message!", "9"])
    b = q.enqueue("echo", ["-x", ""])
    sink, summary = process(root)
    assert summary.succeeded == [a.id, b.id]  # type: ignore[attr-defined]
    assert sink.output(a.id) == [b"Title", b"This is a message!", b"9"]
    assert sink.output(b.id) == [b"-x", b""]
    res = record(root, a.id)
    assert res["state"] == "done"
    result = res["result"]
    assert isinstance(result, dict)
    assert result["outcome"] == "exited" and result["exit_code"] == 0 and result["host"]
    assert {"started", "ended", "duration"} <= result.keys()
    assert os.listdir(root / "queue") == [] and os.listdir(root / "running") == []


def test_failing_job_is_recorded_and_does_not_stop_the_rest(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\necho oops >&2\nexit 3\n")
    write_job(root, "killed", "#!/bin/sh\nkill -TERM $$\n")
    q = Queue(root)
    f = q.enqueue("fail", [])
    k = q.enqueue("killed", [])
    ok = q.enqueue("echo", ["after"])
    sink, summary = process(root)
    assert summary.failed == [f.id, k.id]  # type: ignore[attr-defined]
    assert summary.succeeded == [ok.id]  # type: ignore[attr-defined]
    assert record(root, f.id)["result"]["exit_code"] == 3  # type: ignore[index]
    assert record(root, k.id)["result"]["signal"] == "SIGTERM"  # type: ignore[index]
    assert record(root, k.id)["result"]["outcome"] == "signaled"  # type: ignore[index]
    # stderr is logged at a higher priority than stdout
    assert [p for m, p, fl in sink.entries if fl.get("MINIQ_STREAM") == "stderr"] == [4]


def test_unusable_files_leave_the_queue_with_a_reason(root: Path) -> None:
    q = Queue(root)
    good1 = q.enqueue("echo", ["first"])
    (root / "queue" / "garbage.json").write_bytes(b"{not json")
    wrong = q.enqueue("echo", []).to_json()
    wrong["miniq"] = 99
    (root / "queue" / f"{wrong['id']}.json").write_text(json.dumps(wrong))
    gone = q.enqueue("echo", [])
    write_job(root, "vanish", "#!/bin/sh\n")
    vanish = q.enqueue("vanish", [])
    (root / "jobs" / "vanish.job").unlink()
    noexec = q.enqueue("echo", ["x"]).to_json()
    noexec["name"] = "plain"
    write_job(root, "plain", "#!/bin/sh\n", mode=0o644)
    (root / "queue" / f"{noexec['id']}.json").write_text(json.dumps(noexec))
    good2 = q.enqueue("echo", ["last"])
    sink, summary = process(root)

    assert summary.succeeded == [good1.id, gone.id, good2.id]  # type: ignore[attr-defined]
    assert os.listdir(root / "queue") == [] and os.listdir(root / "running") == []
    failed = {p.stem: json.loads(p.read_text()) for p in (root / "failed").iterdir()}
    reasons = {k: v["result"]["reason"] for k, v in failed.items()}
    assert reasons[wrong["id"]] == "unusable job file: unsupported schema version 99 (this miniq reads version 1)"
    assert reasons[vanish.id] == f"no job type 'vanish': expected an executable at {root}/jobs/vanish.job"
    assert reasons[noexec["id"]].startswith("job type 'plain' is not executable")
    garbage = [v for v in failed.values() if v.get("queued_as") == "garbage.json"]
    assert len(garbage) == 1 and garbage[0]["original"] == "{not json"
    assert garbage[0]["result"]["reason"].startswith("unusable job file: Expecting property name")


def test_big_binary_and_unterminated_output(root: Path) -> None:
    write_job(
        root,
        "noisy",
        "#!/bin/sh\n"
        "head -c 3000000 /dev/zero | tr '\\0' a\n"  # 3 MB in one line
        "printf '\\n'\n"
        "printf 'bin\\377\\001\\n'\n"
        "printf 'no newline at the end'\n",
    )
    job = Queue(root).enqueue("noisy", [])
    sink, _ = process(root)
    out = sink.output(job.id)
    assert b"".join(out[:-2]) == b"a" * 3_000_000
    assert all(len(chunk) <= MAX_LINE for chunk in out)
    assert out[-2:] == [b"bin\\xff\x01", b"no newline at the end"]


def test_systemd_unreachable_fails_jobs_with_a_reason(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no user bus there
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    job = Queue(root).enqueue("echo", ["x"])
    sink = ListSink()
    summary = Processor(Queue(root), Manager.USER, sink=sink).run()
    assert summary.failed == [job.id]
    result = record(root, job.id)["result"]
    assert result["outcome"] == "not-started"  # type: ignore[index]
    assert "cannot reach the user manager" in result["reason"]  # type: ignore[index]
    assert "allow-unconfined = yes" in result["reason"]  # type: ignore[index]
    assert sink.output(job.id) == []


def test_unconfined_only_when_opted_in(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    (root / "miniq.conf").write_text("[processor]\nallow-unconfined = yes\n")
    job = Queue(root).enqueue("echo", ["ran"])
    sink = ListSink()
    Processor(Queue(root), Manager.USER, sink=sink).run()
    result = record(root, job.id)["result"]
    assert result["outcome"] == "exited" and result["confined"] is False  # type: ignore[index]
    assert sink.output(job.id) == [b"ran"]
    assert any(b"running jobs without scopes" in m for m, _, _ in sink.entries)


def test_invalid_config_fails_jobs_instead_of_the_service(root: Path) -> None:
    (root / "miniq.conf").write_text("[limits]\nmemory-max = lots\n")
    job = Queue(root).enqueue("echo", [])
    process(root)
    reason = record(root, job.id)["result"]["reason"]  # type: ignore[index]
    assert reason == (
        "miniq.conf is invalid: invalid size 'lots': expected a number with an optional K, M, G or T suffix, "
        f"e.g. 512M in [limits] of {root}/miniq.conf"
    )


class BrokenRunner(PlainRunner):
    def start(self, *args: object, **kwargs: object) -> Running:
        raise RuntimeError("a bug")


def test_a_bug_fails_one_job_not_the_processor(root: Path) -> None:
    q = Queue(root)
    jobs = [q.enqueue("echo", [str(i)]) for i in range(2)]
    summary = Processor(q, Manager.USER, runner=BrokenRunner(), sink=ListSink()).run()
    assert summary.failed == [j.id for j in jobs]
    result = record(root, jobs[0].id)["result"]
    assert result["outcome"] == "error"  # type: ignore[index]
    assert result["reason"] == "internal error in miniq: RuntimeError('a bug')"  # type: ignore[index]
    assert os.listdir(root / "queue") == [] and os.listdir(root / "running") == []


def test_job_environment(root: Path) -> None:
    write_job(root, "env", '#!/bin/sh\necho "$MINIQ_JOB_ID $MINIQ_JOB_NAME $MINIQ_ROOT $(pwd)"\n')
    job = Queue(root).enqueue("env", [])
    sink, _ = process(root)
    assert sink.output(job.id) == [f"{job.id} env {root} {root}".encode()]
