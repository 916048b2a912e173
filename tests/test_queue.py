"""The queue on real files: publishing, file names, finding jobs by id."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from miniq.core.errors import BadInput, MiniqError, UnknownJob
from miniq.core.job import ID_RE, SCHEMA, Job, State, new_id
from miniq.core.schedule import Schedule
from miniq.store.layout import delayed_name, parse_claim_name, parse_delayed_name, parse_queue_name, queue_name, queue_sort_key
from miniq.store.queue import Queue


def test_enqueue_publishes_a_complete_job(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["a b", "-x", "ünï"])
    files = os.listdir(root / "queue")
    assert files == [f"1000-{job.id}.json"]
    data = json.loads((root / "queue" / files[0]).read_text())
    assert data["miniq"] == SCHEMA
    assert data["name"] == "echo" and data["argv"] == ["a b", "-x", "ünï"]
    assert data["submitter"]["uid"] == os.getuid() and data["submitter"]["host"]
    assert os.listdir(root / "tmp") == []


def test_files_and_directories_are_private(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["secret-token"])
    assert (root / "queue" / f"1000-{job.id}.json").stat().st_mode & 0o777 == 0o600
    for d in ("queue", "delayed", "running", "done", "failed", "tmp", "cancel"):
        assert (root / d).stat().st_mode & 0o777 == 0o700, d


def test_ids_sort_in_submission_order_and_are_unique() -> None:
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.fullmatch(i) for i in ids)


def test_non_utf8_arguments_survive_byte_for_byte(root: Path) -> None:
    raw = b"caf\xe9\xff"
    job = Queue(root).enqueue("echo", [os.fsdecode(raw)])
    back = Job.from_json(json.loads((root / "queue" / f"1000-{job.id}.json").read_bytes()))
    assert back.argv_bytes() == [raw]


def test_unknown_fields_are_kept(root: Path) -> None:
    data = Queue(root).enqueue("echo", []).to_json()
    data["future_field"] = {"x": 1}
    assert Job.from_json(data).to_json()["future_field"] == {"x": 1}


@pytest.mark.parametrize(
    "bad,problem",
    [
        ({"miniq": 2}, "unsupported schema version 2"),
        ({"miniq": True}, "unsupported schema version True"),
        ({"argv": "x"}, "field 'argv' is missing or not a list"),
        ({"argv": [1]}, "field 'argv' must be a list of at most 4096 strings without NUL bytes"),
        ({"argv": ["a\0b"]}, "without NUL bytes"),
        ({"name": "../x"}, "invalid job name '../x'"),
        ({"id": "x"}, "invalid job id 'x'"),
        ({"submitter": "root"}, "field 'submitter' must be an object"),
        ({"submitter": {"uid": "0"}}, "field 'submitter.uid' must be a whole number"),
        ({"schedule": {"priority": [1]}}, "field 'schedule.priority' must be a whole number from -1000 to 1000"),
        ({"schedule": {"priority": 5000}}, "field 'schedule.priority' must be a whole number from -1000 to 1000"),
        ({"schedule": {"not_before": 1764000000}}, "field 'schedule.not_before' must be an ISO 8601 time"),
        ({"schedule": {"retries": "3"}}, "field 'schedule.retries' must be a whole number"),
        ({"schedule": {"after": ["../../x"]}}, "field 'schedule.after' must be a list of at most 64 job ids"),
        ({"limits": {"memory_max": "1G"}}, "limit 'memory-max' must be a whole number"),
        ({"limits": {"memory_max": 2**70}}, "limit 'memory-max' must be a whole number"),
        ({"limits": {"timeout": -1}}, "limit 'timeout' must be a number"),
        ({"limits": {"nice": 1.5}}, "limit 'nice' must be a whole number"),
        ({"limits": {"bogus": 1}}, "unknown limit 'bogus'"),
        ({"limits": []}, "field 'limits' must be an object"),
        ({"attempts": [{"outcome": "exploded"}]}, "field 'attempts': unknown outcome 'exploded'"),
        ({"attempts": [{"outcome": "exited", "exit_code": "0"}]}, "field 'attempts': result field 'exit_code' must be a whole number"),
    ],
)
def test_invalid_job_files_are_named(root: Path, bad: dict[str, object], problem: str) -> None:
    data = Queue(root).enqueue("echo", []).to_json()
    data.update(bad)
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(".", r"\.")):
        Job.from_json(data)


def test_bad_names_write_nothing(root: Path) -> None:
    q = Queue(root)
    for name in ("../echo", "a/b", ".hidden", "..", "tab\there", ""):
        with pytest.raises(BadInput):
            q.enqueue(name, [])
    assert not (root / "queue").exists()


def test_arguments_that_cannot_be_passed_are_refused(root: Path) -> None:
    with pytest.raises(BadInput, match="NUL byte"):
        Queue(root).enqueue("echo", ["a\0b"])
    # One argument over the kernel's MAX_ARG_STRLEN (128 KiB) could never be passed to exec.
    exact = (
        "argument 2 is 1040000 bytes: the kernel passes at most 131071 bytes in one argument, "
        "so the job could never start; pass large data in a file"
    )
    with pytest.raises(BadInput) as e:
        Queue(root).enqueue("echo", ["ok", "x" * 1_040_000])
    assert e.value.message == exact
    Queue(root).enqueue("echo", ["x" * 131_071])  # the longest that passes
    with pytest.raises(BadInput, match="argument 1 is 131072 bytes"):
        Queue(root).enqueue("echo", ["x" * 131_072])
    # Many arguments each under the limit, but together over ARG_MAX.
    from miniq.core.job import arg_max

    many = ["y" * 100_000] * (arg_max() // 100_000 + 1)
    with pytest.raises(BadInput, match=r"over the kernel's limit of \d+ bytes for one program \(ARG_MAX\)"):
        Queue(root).enqueue("echo", many)
    assert [p.name for p in (root / "queue").iterdir()].__len__() == 1  # only the one that passes


def test_an_argument_at_the_kernels_limit_really_runs(root: Path) -> None:
    """The limits miniq checks are the kernel's: the longest argument it accepts reaches the job."""
    import subprocess

    arg = "z" * 131_071
    Queue(root).enqueue("echo", [arg])
    proc = subprocess.run([str(root / "jobs" / "echo.job"), arg], capture_output=True)
    assert proc.returncode == 0 and len(proc.stdout) == 131_072
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run([str(root / "jobs" / "echo.job"), arg + "z"])


def test_names_sort_in_run_order_and_parse_back() -> None:
    a, b = new_id(), new_id()
    names = [queue_name(0, b), queue_name(-5, a), queue_name(10, b), queue_name(0, a), queue_name(1000, a), queue_name(-1000, a)]
    assert [parse_queue_name(n) for n in sorted(names)] == [(1000, a), (10, b), (0, a), (0, b), (-5, a), (-1000, a)]
    assert parse_queue_name(f"{a}.json") == (0, a) and parse_queue_name(f"{a}.p-3.json") == (-3, a)  # 0.1.0 names
    assert queue_sort_key(f"{a}.p7.json") == queue_name(7, a)
    for junk in ("x.json", f"{a}.json.tmp", "wake", f"../{a}.json", f"9999-{a}.json.bak"):
        assert parse_queue_name(junk) is None
    assert parse_delayed_name(delayed_name(a, 1764000000.5)) == (1764000000.5, a)
    assert parse_delayed_name(delayed_name(a, None)) == (None, a)
    assert sorted([delayed_name(a, None), delayed_name(a, 2e9), delayed_name(b, 1e9)])[0] == delayed_name(b, 1e9)
    assert parse_claim_name(f"{a}@host+{'0' * 32}+4026531836+12+345.json") == (a, f"host+{'0' * 32}+4026531836+12+345", False)
    assert parse_claim_name(f"{a}@h@12.345.json") == (a, None, False)  # 0.1.0
    assert parse_claim_name("x@y.json") is None


def test_locate_finds_every_state_by_exact_names(root: Path) -> None:
    q = Queue(root)
    queued = q.enqueue("echo", [])
    urgent = q.enqueue("echo", [], schedule=Schedule(priority=7))
    later = q.enqueue("echo", [], schedule=Schedule(not_before=2e9))
    waiting = q.enqueue("echo", [], schedule=Schedule(after=(queued.id,)))
    assert q.locate(queued.id) == (State.QUEUED, root / "queue" / f"1000-{queued.id}.json")
    assert q.locate(urgent.id) == (State.QUEUED, root / "queue" / f"0993-{urgent.id}.json")
    assert q.locate(later.id)[0] is State.DELAYED
    assert q.locate(waiting.id) == (State.DELAYED, root / "delayed" / f"after-{waiting.id}.json")
    assert os.listdir(root / "priorities") == ["0993"]
    with pytest.raises(UnknownJob, match="no job with id '20990101-000000-000000-00000000'"):
        q.locate("20990101-000000-000000-00000000")
    with pytest.raises(UnknownJob, match="expected an id as printed by miniq enqueue"):
        q.locate("../../etc/passwd")


def test_no_name_ever_holds_a_partial_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A staging file is written unnamed (O_TMPFILE) and named only once it is on
    disk: a crash while writing leaves nothing under any name."""
    from miniq.core import files

    seen: list[list[str]] = []
    real_fill = files.fill

    def watched(fd: int, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
        seen.append(sorted(os.listdir(root / "tmp")))
        real_fill(fd, data, mode, owner)
        seen.append(sorted(os.listdir(root / "tmp")))

    monkeypatch.setattr(files, "fill", watched)
    Queue(root).ensure_layout()
    job = Queue(root).enqueue("echo", ["x"])
    assert seen == [[], []]
    assert (root / "queue" / queue_name(0, job.id)).read_bytes().endswith(b"}\n")
    assert os.listdir(root / "tmp") == []

    def crash(fd: int, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
        os.write(fd, data[:10])
        raise OSError(5, "Input/output error")  # as if the machine died here

    monkeypatch.setattr(files, "fill", crash)
    with pytest.raises(MiniqError):
        Queue(root).enqueue("echo", ["y"])
    assert os.listdir(root / "tmp") == [] and len(os.listdir(root / "queue")) == 1


def test_a_failed_write_names_the_files_it_failed_on(root: Path) -> None:
    q = Queue(root)
    q.enqueue("echo", [])
    (root / "queue").rename(root / "queue-gone")  # taken away under a queue in use
    with pytest.raises(MiniqError) as e:
        q.enqueue("echo", ["x"])
    message = e.value.message
    assert message.startswith(f"cannot write to the queue under {root}: No such file or directory (")
    assert f"{root}/tmp/." in message and f" -> {root}/queue/" in message
    assert os.listdir(root / "tmp") == []  # the staging file went with the failure
