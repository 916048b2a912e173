"""The queue on real files: publishing, claiming, rejecting, recovering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from miniq.errors import BadInput
from miniq.job import ID_RE, SCHEMA, Job, State, new_id
from miniq.queue import Queue, claimer_id


def test_enqueue_publishes_a_complete_job(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["a b", "-x", "ünï"])
    files = os.listdir(root / "queue")
    assert files == [f"{job.id}.json"]
    data = json.loads((root / "queue" / files[0]).read_text())
    assert data["miniq"] == SCHEMA
    assert data["name"] == "echo" and data["argv"] == ["a b", "-x", "ünï"]
    assert data["submitter"]["uid"] == os.getuid() and data["submitter"]["host"]
    assert os.listdir(root / "tmp") == []


def test_ids_sort_in_submission_order_and_are_unique() -> None:
    ids = [new_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(ID_RE.fullmatch(i) for i in ids)


def test_non_utf8_arguments_survive_byte_for_byte(root: Path) -> None:
    raw = b"caf\xe9\xff"
    job = Queue(root).enqueue("echo", [os.fsdecode(raw)])
    back = Job.from_json(json.loads((root / "queue" / f"{job.id}.json").read_bytes()))
    assert back.argv_bytes() == [raw]


def test_unknown_fields_are_kept(root: Path) -> None:
    data = Queue(root).enqueue("echo", []).to_json()
    data["future_field"] = {"x": 1}
    assert Job.from_json(data).to_json()["future_field"] == {"x": 1}


@pytest.mark.parametrize(
    "bad,problem",
    [
        ({"miniq": 2}, "unsupported schema version 2"),
        ({"argv": "x"}, "field 'argv' is missing or not a list"),
        ({"argv": [1]}, "field 'argv' must be a list of strings"),
        ({"name": "../x"}, "invalid job name '../x'"),
        ({"id": "x"}, "invalid job id 'x'"),
    ],
)
def test_invalid_job_files_are_named(root: Path, bad: dict[str, object], problem: str) -> None:
    data = Queue(root).enqueue("echo", []).to_json()
    data.update(bad)
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        Job.from_json(data)


def test_bad_names_write_nothing(root: Path) -> None:
    q = Queue(root)
    for name in ("../echo", "a/b", ".hidden", "..", "tab\there", ""):
        with pytest.raises(BadInput):
            q.enqueue(name, [])
    assert not (root / "queue").exists()


def test_claim_is_exclusive_and_in_order(root: Path) -> None:
    q = Queue(root)
    jobs = [q.enqueue("echo", [str(i)]) for i in range(5)]
    claims = [q.claim_next("hostA@1.1"), q.claim_next("hostB@2.2")]
    assert [c.id for c in claims if c] == [jobs[0].id, jobs[1].id]
    # A processor that loses the race for a file gets None, not an error.
    assert q.claim(f"{jobs[0].id}.json", "hostC@3.3") is None
    assert sorted(os.listdir(root / "running")) == sorted([f"{jobs[0].id}@hostA@1.1.json", f"{jobs[1].id}@hostB@2.2.json"])


def test_concurrent_processes_never_share_a_job(root: Path) -> None:
    """Eight processes race to claim 400 jobs; every job is claimed exactly once."""
    q = Queue(root)
    ids = {q.enqueue("echo", [str(i)]).id for i in range(400)}
    script = (
        "import sys; from pathlib import Path; from miniq.queue import Queue, claimer_id\n"
        "q = Queue(Path(sys.argv[1])); c = claimer_id()\n"
        "while (claim := q.claim_next(c)) is not None: print(claim.id)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE, text=True) for _ in range(8)]
    claimed = [line for p in procs for line in p.communicate()[0].split()]
    assert sorted(claimed) == sorted(ids)
    assert len(os.listdir(root / "running")) == 400
    assert os.listdir(root / "queue") == []


def test_dead_processor_claims_are_requeued(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["x"])
    # A claim held by a PID that is not alive on this host.
    dead = subprocess.Popen(["true"])
    dead.wait()
    host_part = claimer_id().split("@")[0]
    q.claim_next(f"{host_part}@{dead.pid}.1")
    other_host = q.enqueue("echo", ["y"])
    q.claim_next("elsewhere@1.1")
    stopped: list[str] = []
    assert q.recover(before_requeue=stopped.append) == [job.id]
    assert stopped == [job.id]
    data = json.loads((root / "queue" / f"{job.id}.json").read_text())
    assert data["attempts"][0]["outcome"] == "interrupted"
    # Another host's claim is left to that host.
    assert os.listdir(root / "running") == [f"{other_host.id}@elsewhere@1.1.json"]


def test_live_claims_are_not_recovered(root: Path) -> None:
    q = Queue(root)
    q.enqueue("echo", [])
    q.claim_next(claimer_id())
    assert q.recover() == []
    assert len(os.listdir(root / "running")) == 1


def test_find_reports_each_state(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", [])
    assert q.find(job.id)[0] is State.QUEUED
    claim = q.claim_next(claimer_id())
    assert claim is not None
    assert q.record(job.id)["state"] == "running"
    q.finish(claim, dict(job.to_json(), result={"outcome": "exited", "exit_code": 0}), State.DONE)
    assert q.find(job.id)[0] is State.DONE
    assert os.listdir(root / "running") == []


def test_an_interrupted_job_runs_again_and_keeps_its_priority(root: Path) -> None:
    from test_processor import ListSink

    from miniq.job import Schedule
    from miniq.processor import Processor
    from miniq.scope import PlainRunner
    from miniq.settings import Manager

    q = Queue(root)
    job = q.enqueue("echo", ["again"], schedule=Schedule(priority=3))
    dead = subprocess.Popen(["true"])
    dead.wait()
    q.claim_next(f"{claimer_id().split('@')[0]}@{dead.pid}.1")
    summary = Processor(q, Manager.USER, runner=PlainRunner(), sink=ListSink()).run()
    assert summary.recovered == [job.id] and summary.succeeded == [job.id]
    record = q.record(job.id)
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted", "exited"]
    assert record["state"] == "done"
