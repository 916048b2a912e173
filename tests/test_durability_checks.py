"""The durability proofs' own checks, each shown to fail on a planted defect.

The power-cut test (tests/vm/powercut.py), the write-log replay (dmlog.py)
and the nemesis (tests/nemesis/harness.py) run for many minutes on guests and
sandboxes; a check that cannot fail would pass them all the same.  Here each
check meets a queue that is right, and then the same queue with one defect
planted, the way a bug of miniq would leave it: a job dropped to failed/, a
record rewritten, a second run without a cut, more interruptions than the
cuts explain, a dependency run early, an interruption of the wrong cause.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from vm.powercut import Failure, Ledger, Run, check_end, check_state

B1, B2, B3 = "1" * 32, "2" * 32, "3" * 32  # boots: B1 and B2 were cut, B3 drained


def _attempt(outcome: str, exit_code: int | None = None, **more: Any) -> dict[str, Any]:
    return {"outcome": outcome, **({"exit_code": exit_code} if exit_code is not None else {}), **more}


def _record(job_id: str, attempts: list[dict[str, Any]], ended: str = "2026-12-07T00:00:10+00:00") -> dict[str, Any]:
    result = dict(attempts[-1], ended=ended)
    return {"id": job_id, "state": "done" if result.get("exit_code") == 0 else "failed", "attempts": attempts, "result": result}


def _snapshot(records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    entries = [{"state": r["state"], "id": i, "name": f"{i}.json", "record": r} for i, r in records.items()]
    files = [{"path": f"{r['state']}/{i}.json", "size": 100, "json": True, "head": "{"} for i, r in records.items()]
    return {"files": files, "entries": entries}


def _good() -> tuple[dict[str, dict[str, Any]], Ledger]:
    """Four jobs as a right run leaves them: one cut short by the cut of B1."""
    lost = _attempt("interrupted", cause="lost", reason="a cut")
    records = {
        "cut": _record("cut", [lost, _attempt("exited", 0)]),
        "flaky": _record("flaky", [_attempt("exited", 1), _attempt("exited", 0)]),
        "parent": _record("parent", [_attempt("exited", 0)], ended="2026-12-07T00:00:05+00:00"),
        "child": _record("child", [_attempt("exited", 0)]),
    }
    ledger = Ledger(boots=[B1, B2, B3])
    for line in ("ENQ cut work", "ENQ flaky flaky", "ENQ parent work", "ENQ child after:parent"):
        ledger.take(line)
    parent_end = 1796601605.0  # 2026-12-07T00:00:05Z
    ledger.runs = {
        "cut": [Run(1, B1, parent_end - 100), Run(2, B3, parent_end)],
        "flaky": [Run(1, B2, parent_end), Run(2, B2, parent_end + 1)],
        "parent": [Run(1, B2, parent_end - 1)],
        "child": [Run(1, B2, parent_end + 0.5)],
    }
    return records, ledger


def test_a_right_run_passes() -> None:
    records, ledger = _good()
    counts = check_end(_snapshot(records), ledger, parallel=2)
    assert counts["done as their kind calls for"] == 4 and counts["interrupted by a cut"] == 1
    assert counts["flaky within its retries"] == 1 and counts["after jobs after their parent"] == 1


def _fails(records: dict[str, dict[str, Any]], ledger: Ledger, expected: str) -> None:
    with pytest.raises(Failure, match=expected):
        check_end(_snapshot(records), ledger, parallel=2)


def test_a_job_dropped_to_failed_is_caught() -> None:
    """As max-interruptions counting a power cut did: the job never misbehaved."""
    records, ledger = _good()
    records["cut"] = _record("cut", [_attempt("interrupted", cause="lost", reason="3 cuts")])
    records["cut"]["state"] = "failed"
    _fails(records, ledger, r"job cut \(work\) ended failed: interrupted")


def test_a_record_rewritten_is_caught() -> None:
    records, ledger = _good()
    check_state(_snapshot(records), ledger, "first look")
    changed = copy.deepcopy(records)
    changed["parent"]["result"]["duration"] = 99.0  # one field, neither the state nor an outcome
    with pytest.raises(Failure, match="record of parent changed"):
        check_state(_snapshot(changed), ledger, "second look")


def test_a_second_run_without_a_cut_is_caught() -> None:
    records, ledger = _good()
    ledger.runs["cut"] = [Run(1, B2, 0.0), Run(2, B2, 1.0)]  # interrupted, then run again in the same boot
    _fails(records, ledger, "a second run without a cut")
    records, ledger = _good()
    ledger.runs["cut"] = [Run(1, B3, 0.0), Run(2, B3, 1.0)]  # its run "cut short" in the boot nobody cut
    _fails(records, ledger, "which was not cut")


def test_more_interruptions_than_the_cuts_explain_are_caught() -> None:
    records, ledger = _good()
    lost = _attempt("interrupted", cause="lost", reason="a cut")
    for n in range(4):
        records[f"extra{n}"] = _record(f"extra{n}", [lost, _attempt("exited", 0)])
        ledger.take(f"ENQ extra{n} work")
    _fails(records, ledger, "5 interrupted attempts, more than 2 cuts x parallel 2 explain")


def test_an_interruption_of_another_cause_is_caught() -> None:
    records, ledger = _good()
    records["cut"]["attempts"][0]["cause"] = "died"
    _fails(records, ledger, "interrupted with cause 'died'")


def test_a_stop_is_accepted_only_after_an_orderly_stop() -> None:
    """The write log's recorded run ends with systemctl stop: a flush point after it holds a stopped run."""
    records, ledger = _good()
    records["cut"]["attempts"][0].update(cause="stopped", reason="its processor was stopped")
    _fails(records, ledger, "interrupted with cause 'stopped'")  # no stop happened: only cuts
    ledger.stopped = {B1}
    counts = check_end(_snapshot(records), ledger, parallel=2)
    assert counts["interrupted by an orderly stop"] == 1 and counts["interrupted by a cut"] == 0
    ledger.stopped = {B2}  # stopped, but its run was in B1, which was not
    _fails(records, ledger, "which was not stopped, and was stopped")


def test_a_dependency_run_early_and_a_flaky_job_over_its_retries_are_caught() -> None:
    records, ledger = _good()
    ledger.runs["child"] = [Run(1, B2, 1796601604.0)]  # a second before its parent ended
    _fails(records, ledger, "before job parent it runs after ended")
    records, ledger = _good()
    records["flaky"] = _record("flaky", [_attempt("exited", 1)] * 3 + [_attempt("exited", 0)])
    ledger.runs["flaky"] = [Run(k, B2, float(k)) for k in range(1, 5)]
    _fails(records, ledger, "failed 3 times before it succeeded")


# -- the nemesis's verdict -------------------------------------------------------------


def _nemesis(tmp_path: Any) -> Any:
    """A nemesis whose queue holds one right job, as check() reads it (no sandbox)."""
    import json

    from nemesis.harness import Nemesis

    n = Nemesis(tmp_path, tmp_path, seed=1)
    for d in ("queue", "delayed", "running", "tmp", "rejected", "done", "failed"):
        (n.root / d).mkdir(parents=True)
    n.logdir.mkdir(parents=True)
    lost = _attempt("interrupted", lost_host="node-a", reason="node-a stopped renewing its lease 6 s ago (lease 4 s)", cause="lost")
    record = _record("j1", [lost, _attempt("exited", 0, started="2026-12-07T00:00:01+00:00")])
    (n.root / "done" / "j1.json").write_text(json.dumps(record))
    n.runs.write_text("RUN j1 1 node-a 1.0\nRUN j1 2 node-b 2.0\n")
    n.client.enqueued["j1"] = {"kind": "plain"}
    return n


def test_the_nemesis_verdict_passes_a_right_round(tmp_path: Any) -> None:
    figures = _nemesis(tmp_path).check(1.0)
    assert figures["lost leases recorded with both attempts"] == 1


def test_the_nemesis_verdict_catches_each_planted_defect(tmp_path: Any) -> None:
    import json

    cases = []
    n = _nemesis(tmp_path / "a")
    n.client.errors.append("client 7: IndexError('list index out of range')")
    cases.append((n, "a client failed: client 7: IndexError"))
    n = _nemesis(tmp_path / "b")
    n.client.refusals.append((10.0, 11.0, 1, "Error: cannot write to the queue: No space left on device"))  # never full then
    cases.append((n, "refused while the disk was not full"))
    n = _nemesis(tmp_path / "c")
    n.full.append((9.0, 12.0))
    n.client.refusals.append((10.0, 11.0, 2, "Error: invalid duration"))
    cases.append((n, "an enqueue refused on a full disk said"))
    n = _nemesis(tmp_path / "d")
    (n.root / "done" / "ghost.json").write_text(json.dumps(_record("ghost", [_attempt("exited", 0)])))  # refused, yet written
    cases.append((n, "jobs nobody was told of were written"))
    n = _nemesis(tmp_path / "e")
    lost = _attempt("interrupted", lost_host="node-a", reason="node-a stopped renewing its lease 6 s ago (lease 4 s)")
    (n.root / "done" / "j1.json").write_text(json.dumps(_record("j1", [_attempt("exited", 0), lost])))
    cases.append((n, "its lost attempt 2 is its last"))
    for nemesis, expected in cases:
        with pytest.raises(AssertionError, match=expected):
            nemesis.check(1.0)
