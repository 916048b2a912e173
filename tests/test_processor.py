"""The processor on real files and real processes, without systemd.

These use ``PlainRunner`` (no scope) and a sink that records journal
entries; the same behaviour is proven with real scopes and the real journal
in tests/integration.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
from helpers import ListSink, process, record, result_of, write_job

from miniq.core import files
from miniq.core.manager import Manager
from miniq.run.processor import Processor
from miniq.run.runner import PlainRunner
from miniq.run.spawn import ExecSpec
from miniq.store.queue import Queue
from miniq.systemd.journal import MAX_LINE


def test_runs_jobs_in_order_with_their_arguments(root: Path) -> None:
    q = Queue(root)
    a = q.enqueue("echo", ["Title", "This is a message!", "9"])
    b = q.enqueue("echo", ["-x", ""])
    sink, summary = process(root)
    assert summary.succeeded == [a.id, b.id]
    assert sink.output(a.id) == [b"Title", b"This is a message!", b"9"]
    assert sink.output(b.id) == [b"-x", b""]
    res = record(root, a.id)
    assert res.state.label == "done"
    result = result_of(root, a.id)
    assert result["outcome"] == "exited" and result["exit_code"] == 0 and result["host"]
    assert {"started", "ended", "duration", "run"} <= result.keys()
    assert result["output_lines"] == 3
    assert os.listdir(root / "queue") == [] and os.listdir(root / "running") == []


def test_failing_job_is_recorded_and_does_not_stop_the_rest(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\necho oops >&2\nexit 3\n")
    write_job(root, "killed", "#!/bin/sh\nkill -TERM $$\n")
    q = Queue(root)
    f = q.enqueue("fail", [])
    k = q.enqueue("killed", [])
    ok = q.enqueue("echo", ["after"])
    sink, summary = process(root)
    assert summary.failed == [f.id, k.id]
    assert summary.succeeded == [ok.id]
    assert result_of(root, f.id)["exit_code"] == 3
    assert result_of(root, k.id)["signal"] == "SIGTERM"
    assert result_of(root, k.id)["outcome"] == "signaled"
    # stderr is logged at a higher priority than stdout
    assert [p for m, p, fl in sink.entries if fl.get("MINIQ_STREAM") == "stderr"] == [4]


def test_unusable_files_leave_the_queue_with_a_reason(root: Path) -> None:
    q = Queue(root)
    good1 = q.enqueue("echo", ["first"])
    (root / "queue" / "garbage.json").write_bytes(b"{not json")
    wrong = q.enqueue("echo", []).to_json()
    wrong["miniq"] = 99
    (root / "queue" / f"1000-{wrong['id']}.json").write_text(json.dumps(wrong))
    gone = q.enqueue("echo", [])
    write_job(root, "vanish", "#!/bin/sh\n")
    vanish = q.enqueue("vanish", [])
    (root / "jobs" / "vanish.job").unlink()
    noexec = q.enqueue("echo", ["x"]).to_json()
    noexec["name"] = "plain"
    write_job(root, "plain", "#!/bin/sh\n", mode=0o644)
    (root / "queue" / f"1000-{noexec['id']}.json").write_text(json.dumps(noexec))
    good2 = q.enqueue("echo", ["last"])
    sink, summary = process(root)

    assert summary.succeeded == [good1.id, gone.id, good2.id]
    assert os.listdir(root / "queue") == [] and os.listdir(root / "running") == []
    failed = {p.stem: json.loads(p.read_text()) for p in (root / "failed").iterdir()}
    reasons = {k: v["result"]["reason"] for k, v in failed.items()}
    assert reasons[wrong["id"]] == (
        "unusable job file: it is not a usable job file: unsupported schema version 99 (this miniq reads version 1)"
    )
    assert reasons[vanish.id] == f"no job type 'vanish': expected an executable at {root}/jobs/vanish.job"
    assert reasons[noexec["id"]].startswith("job type 'plain' is not executable")
    garbage = [v for v in failed.values() if v.get("queued_as") == "queue/garbage.json"]
    assert len(garbage) == 1 and garbage[0]["original"] == "{not json"
    assert garbage[0]["result"]["reason"].startswith("unusable job file: it is not valid JSON: Expecting property name")
    assert garbage[0]["quarantined"].startswith("rejected/")


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
    sink, _ = process(root, linger=0.0)
    out = sink.output(job.id)
    assert b"".join(out[:-2]) == b"a" * 3_000_000
    assert all(len(chunk) <= MAX_LINE for chunk in out)
    assert out[-2:] == [b"bin\\xff\x01", b"no newline at the end"]


def test_output_over_the_rate_limit_is_dropped_and_counted(root: Path) -> None:
    write_job(root, "chatty", "#!/bin/sh\nseq 1 5000\n")
    (root / "miniq.conf").write_text("[processor]\noutput-rate-limit = 1000/1h\n")
    job = Queue(root).enqueue("chatty", [])
    sink, summary = process(root)
    assert summary.succeeded == [job.id]
    assert sink.output(job.id) == [str(i).encode() for i in range(1, 1001)]
    [dropped] = sink.events("dropped")
    assert dropped["MINIQ_DROPPED"] == "4000"
    result = result_of(root, job.id)
    assert (result["output_lines"], result["output_dropped"]) == (5000, 4000)
    assert [f["MINIQ_OUTCOME"] for f in sink.events("finished")] == ["exited"]  # miniq's own entries pass


def test_systemd_unreachable_fails_jobs_with_a_reason(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pystemd  # noqa: F401 - a dependency: this test is about the manager, not the library

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))  # no user bus there
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    job = Queue(root).enqueue("echo", ["x"])
    sink = ListSink()
    summary = Processor(Queue(root), Manager.USER, sink=sink, linger=0).run()
    assert summary.failed == [job.id]
    result = result_of(root, job.id)
    assert result["outcome"] == "not-started"
    assert "cannot reach your user manager" in result["reason"]
    assert "allow-unconfined = yes" in result["reason"]
    assert sink.output(job.id) == []


def test_pystemd_missing_fails_jobs_with_a_reason(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pystemd.dbuslib", None)  # as if it were not installed
    job = Queue(root).enqueue("echo", ["x"])
    summary = Processor(Queue(root), Manager.USER, sink=ListSink(), linger=0).run()
    assert summary.failed == [job.id]
    reason = result_of(root, job.id)["reason"]
    assert reason.startswith("pystemd is not installed") and "allow-unconfined = yes" in reason


def fresh_interpreter(code: str) -> list[str]:
    """The lines ``code`` prints in a new interpreter (nothing imported yet)."""
    import subprocess

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()


def test_the_processor_loads_pystemds_bus_alone_and_leaves_the_package_whole() -> None:
    """systemd.dbuslib: a processor does not import the rest of pystemd (lxml
    among it), and whoever imports pystemd afterwards still gets all of it."""
    code = (
        "import sys\nfrom miniq.systemd.dbus import dbuslib\n"
        "bus = dbuslib().DBus\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pystemd', 'lxml')))\n"
        "import pystemd\nprint(bool(pystemd.__version__), 'DBus' in pystemd.__all__)\n"
        "import pystemd.systemd1\n"
        "print(pystemd.systemd1.Unit.__name__, pystemd.DBus.__name__, pystemd.dbuslib.DBus is bus, 'lxml' in sys.modules)\n"
    )
    out = fresh_interpreter(code)
    assert out[0] == "['pystemd', 'pystemd.dbusexc', 'pystemd.dbuslib', 'pystemd.utils']"
    assert out[1] == "True True"  # the package's own __init__ ran
    assert out[2] == "Unit pystemd.DBus True True"


def test_a_cold_processor_defers_the_standard_modules_pystemd_imports_and_they_still_work() -> None:
    """systemd.dbuslib: what a cold ``miniq process`` imports leaves out
    dataclasses (through pprint) and platform (through uuid); a caller who
    uses pprint, uuid or pystemd's own pformat afterwards gets them whole."""
    code = (
        "import sys\nfrom miniq.run.processor import Processor, preload\nfrom miniq.store.queue import Queue\n"
        "preload()\n"
        "print(sorted(m for m in ('dataclasses', 'inspect', 'platform') if m in sys.modules))\n"
        "import pprint, uuid\nfrom pystemd import dbuslib\n"
        "print(dbuslib.pformat({'a': [1]}), pprint.pformat((2,)), pprint.PrettyPrinter.__name__, uuid.UUID(int=5).int)\n"
        "print(type(pprint).__name__, type(uuid).__name__, 'dataclasses' in sys.modules)\n"
    )
    out = fresh_interpreter(code)
    assert out[0] == "[]"
    assert out[1] == "{'a': [1]} (2,) PrettyPrinter 5"
    assert out[2] == "module module True"  # loaded whole on first use


def test_unconfined_only_when_opted_in(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    (root / "miniq.conf").write_text("[processor]\nallow-unconfined = yes\n")
    job = Queue(root).enqueue("echo", ["ran"])
    sink = ListSink()
    Processor(Queue(root), Manager.USER, sink=sink, linger=0).run()
    result = result_of(root, job.id)
    assert result["outcome"] == "exited" and result["confined"] is False
    assert sink.output(job.id) == [b"ran"]
    assert any(b"running jobs without scopes" in m for m, _, _ in sink.entries)


def test_invalid_config_fails_jobs_instead_of_the_service(root: Path) -> None:
    (root / "miniq.conf").write_text("[limits]\nmemory-max = lots\n")
    job = Queue(root).enqueue("echo", [])
    process(root)
    reason = result_of(root, job.id)["reason"]
    assert reason == (
        "miniq.conf is invalid: invalid size 'lots': expected a number with an optional K, M, G or T suffix, "
        f"e.g. 512M in [limits] of {root}/miniq.conf"
    )


class BrokenRunner(PlainRunner):
    def start(self, spec: ExecSpec) -> object:  # type: ignore[override]
        raise RuntimeError("a bug")


def test_a_bug_fails_one_job_not_the_processor(root: Path) -> None:
    q = Queue(root)
    jobs = [q.enqueue("echo", [str(i)]) for i in range(2)]
    summary = Processor(q, Manager.USER, runner=BrokenRunner(), sink=ListSink(), linger=0).run()
    assert summary.failed == [j.id for j in jobs]
    result = result_of(root, jobs[0].id)
    assert result["outcome"] == "error"
    assert result["reason"] == "internal error in miniq: RuntimeError('a bug')"
    assert os.listdir(root / "queue") == [] and os.listdir(root / "running") == []


def test_job_environment_is_clean(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for leak in ("INVOCATION_ID", "TRIGGER_UNIT", "MANAGERPID", "DBUS_SESSION_BUS_ADDRESS", "SECRET_OF_THE_PROCESSOR"):
        monkeypatch.setenv(leak, "leaked")
    write_job(root, "env", '#!/bin/sh\necho "$MINIQ_JOB_ID $MINIQ_JOB_NAME $MINIQ_ROOT $(pwd)"\nenv | cut -d= -f1 | sort\n')
    job = Queue(root).enqueue("env", [])
    sink, _ = process(root)
    out = sink.output(job.id)
    assert out[0] == f"{job.id} env {root} {root}".encode()
    names = {line.decode() for line in out[1:]}
    assert names - {"PWD", "SHLVL", "_", "OLDPWD"} == {
        "PATH", "LANG", "HOME", "USER", "LOGNAME", "SHELL", "MINIQ_JOB_ID", "MINIQ_JOB_NAME", "MINIQ_ROOT", "MINIQ_ATTEMPT",
    }  # fmt: skip


def test_the_processor_lingers_for_a_job_that_arrives(root: Path) -> None:
    import threading
    import time

    q = Queue(root)
    first = q.enqueue("echo", ["1"])
    later: list[str] = []

    def enqueue_soon() -> None:
        time.sleep(0.5)
        later.append(q.enqueue("echo", ["2"]).id)

    thread = threading.Thread(target=enqueue_soon)
    thread.start()
    _, summary = process(root, linger=3.0)
    thread.join()
    assert summary.succeeded == [first.id, *later]


def test_a_scope_systemd_was_too_busy_to_start_is_run_later(root: Path) -> None:
    """Not the job's failure: it goes back, its attempt says why, and it runs later."""
    from miniq.run.spawn import StartDelayed

    class Busy(PlainRunner):
        def start(self, spec: ExecSpec):  # type: ignore[no-untyped-def]
            raise StartDelayed("systemd did not move PID 1 into x.scope within 10 s")

    job = Queue(root).enqueue("echo", ["later"])
    wakes: list[float] = []
    summary = Processor(Queue(root), Manager.USER, runner=Busy(), sink=ListSink(), waker=wakes.append, linger=0.0).run()
    assert summary.succeeded == [] and summary.failed == [] and wakes
    record = Queue(root).read(job.id)
    assert record.state.label == "delayed"
    [attempt] = record.job.attempts  # type: ignore[union-attr]
    assert attempt.outcome.value == "interrupted" and "its scope was not ready in time" in (attempt.reason or "")
    [entry] = (root / "delayed").iterdir()
    entry.rename(root / "queue" / f"1000-{job.id}.json")  # as if its backoff passed
    _, summary = process(root)
    assert summary.succeeded == [job.id]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_a_full_disk_at_a_jobs_end_keeps_its_result_and_records_it_once(root: Path, monkeypatch: pytest.MonkeyPatch, error: int) -> None:
    write_job(root, "three", '#!/bin/sh\necho ran >> "$MINIQ_ROOT/runs"\nexit 3\n')
    job = Queue(root).enqueue("three", [])
    real_stage = files.stage
    failures: list[str] = []

    def stage_on_a_full_disk(tmp_dir: Path, name: str, data: bytes, owner: tuple[int, int] | None) -> Path:
        if len(failures) < 2:  # the first two tries meet the error, as the end's stage is written
            failures.append(name)
            raise OSError(error, os.strerror(error))
        return real_stage(tmp_dir, name, data, owner)

    monkeypatch.setattr(files, "stage", stage_on_a_full_disk)
    sink, summary = process(root)
    assert len(failures) == 2 and all(name.startswith(".end~failed~") for name in failures)
    assert summary.failed == [job.id]
    assert (root / "runs").read_text() == "ran\n"  # kept, not run again
    assert result_of(root, job.id)["exit_code"] == 3
    assert len(record(root, job.id).job.attempts) == 1  # type: ignore[union-attr]
    assert [n for n in os.listdir(root / "tmp") if n.startswith(".end~")] == []
    assert os.listdir(root / "running") == []
    said = sink.text()
    assert said.count(f"cannot record job {job.id} ({os.strerror(error)}); keeping its result and trying again") == 2


def test_a_call_systemd_never_answered_is_told_from_a_refusal() -> None:
    """systemd.NoAnswer: the scope's start is then delayed, not failed (scope.py)."""
    from miniq.systemd.dbus import NoAnswer, Systemd, SystemdError

    class Gone(Exception):
        err_name = b"org.freedesktop.DBus.Error.NoReply"
        err_message = b"Message recipient disconnected from message bus without replying"

    class Refused(Exception):
        err_name = b"org.freedesktop.systemd1.UnitExists"
        err_message = b"Unit x.scope already exists."

    class Bus:
        def __init__(self, error: Exception) -> None:
            self.error = error

        def call_method(self, *args: object) -> object:
            raise self.error

    systemd = Systemd.__new__(Systemd)
    systemd.bus = Bus(Gone())
    with pytest.raises(NoAnswer, match="did not answer StartTransientUnit: Message recipient disconnected"):
        systemd.call_raw(b"StartTransientUnit", [])
    systemd.bus = Bus(Refused())
    with pytest.raises(SystemdError, match="refused StartTransientUnit: Unit x.scope already exists") as refused:
        systemd.call_raw(b"StartTransientUnit", [])
    assert not isinstance(refused.value, NoAnswer)
