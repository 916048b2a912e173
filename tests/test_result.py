"""The typed result of a run: predicates, wording, JSON."""

from __future__ import annotations

import pytest

from miniq.core.result import Outcome, Result


def test_predicates() -> None:
    ok = Result(Outcome.EXITED, exit_code=0)
    assert ok.succeeded and not ok.counts_as_failure and not ok.may_retry
    failed = Result(Outcome.EXITED, exit_code=2)
    assert not failed.succeeded and failed.counts_as_failure and failed.may_retry
    interrupted = Result(Outcome.INTERRUPTED)
    assert not interrupted.counts_as_failure and not interrupted.may_retry
    assert not Result(Outcome.CANCELLED).may_retry and not Result(Outcome.REJECTED).may_retry
    assert Result(Outcome.NOT_STARTED).may_retry


def test_describe() -> None:
    assert Result(Outcome.EXITED, exit_code=3, duration=1.5).describe() == "exit code 3 after 1.500 s"
    assert Result(Outcome.OOM, signal="SIGKILL").describe() == "killed for exceeding its memory limit (SIGKILL)"
    assert Result(Outcome.INTERRUPTED, reason="host b lost").describe() == "interrupted: host b lost"
    assert Result(Outcome.EXITED, exit_code=0, output_dropped=5).describe() == "exit code 0; 5 line(s) of output dropped"


def test_json_round_trip_keeps_unknown_keys() -> None:
    data = {"outcome": "exited", "exit_code": 0, "duration": 1.0, "future": [1]}
    assert Result.from_json(data).to_json() == data


@pytest.mark.parametrize("bad", [[], {"outcome": "x"}, {"outcome": "exited", "duration": "1"}, {"outcome": "exited", "host": 5}])
def test_bad_results_are_named(bad: object) -> None:
    with pytest.raises(ValueError):
        Result.from_json(bad)
