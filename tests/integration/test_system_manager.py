"""root with system units, installed as README.md says."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from testbed.sandbox import Sandbox

from .common import *  # noqa: F403 - the shared checks run for this installation
from .flows import Flow
from .operate_checks import *  # noqa: F403
from .scope_checks import *  # noqa: F403


@pytest.fixture(scope="module")
def flow(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    f = Flow(sandbox, None, "--system")
    out = f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    assert f"miniq is installed and its units are enabled; your queue is {f.root}." in out
    assert f.unit_state("miniq-process.path") == "active"
    yield f


STAMP = '#!/bin/sh\ndate +%s.%N > "$MINIQ_ROOT/started-$MINIQ_JOB_ID"\n'
BLOCK = '#!/bin/sh\ndate +%s.%N > "$MINIQ_ROOT/started-$MINIQ_JOB_ID"\nwhile [ ! -e "$MINIQ_ROOT/release-$1" ]; do sleep 0.1; done\n'


@pytest.mark.parametrize("capped", [False, True], ids=["parallel 4", "a type capped at 1 beside another"])
def test_every_free_slot_starts_a_new_job_at_once(flow: Flow, capped: bool) -> None:
    """parallel = 4 with one job running until released: each job queued after
    it starts at once in a free slot, also one queued after every other slot
    was idle for longer than linger; with [job:block] parallel = 1 a second
    block job waits for the first and takes its slot at once when it ends."""
    flow.add_job("stamp", STAMP)
    flow.add_job("block", BLOCK)
    flow.sh(f"rm -f {flow.root}/release-*")
    cap = "[job:block]\nparallel = 1\n" if capped else ""
    # parallel applies from a processor's start (README): none of an earlier test may linger on.
    flow.pause()
    flow.sh(f"cat > {flow.root}/miniq.conf", input=f"[processor]\nparallel = 4\nlinger = 1s\n{cap}")
    flow.resume()
    try:
        long, _ = flow.enqueue_timed("block", "long")
        _started(flow, long)
        latencies = []
        for i in range(3):
            job_id, t0 = flow.enqueue_timed("stamp", str(i))
            flow.wait_final([job_id], timeout=30)
            latencies.append(flow.started_at(job_id) - t0)
        time.sleep(3)  # every other slot idle for three times linger
        late, t0 = flow.enqueue_timed("stamp", "late")
        flow.wait_final([late], timeout=30)
        latencies.append(flow.started_at(late) - t0)
        assert flow.record(long)["state"] == "running"
        if capped:
            second, _ = flow.enqueue_timed("block", "second")
            deadline = time.monotonic() + 30
            while not flow.sb.path(f"{flow.root}/delayed/held-{second}.json").exists():  # its type at its cap
                assert time.monotonic() < deadline, flow.diagnose()
                time.sleep(0.1)
            time.sleep(2)  # idle slots past linger
            released = float(flow.sh(f"date +%s.%N; touch {flow.root}/release-long").stdout.split()[0])
            latencies.append(_started(flow, second) - released)
            flow.sh(f"touch {flow.root}/release-second")
            flow.wait_final([second], timeout=30)
        else:
            flow.sh(f"touch {flow.root}/release-long")
        flow.wait_final([long], timeout=30)
    finally:
        flow.sh(f"touch {flow.root}/release-long {flow.root}/release-second; rm -f {flow.root}/miniq.conf")
    print(f"enqueue (or release) -> start while a long job ran, parallel 4: {', '.join(f'{t * 1000:.0f} ms' for t in latencies)}")
    # A couple of seconds at most; before, each waited for the long job (here: forever).
    assert max(latencies) < 5, latencies
    deadline = time.monotonic() + 30
    while flow.unit_state("miniq-process.service") != "inactive":  # every slot idle: the processor ends
        assert time.monotonic() < deadline, flow.diagnose()
        time.sleep(0.2)
    assert flow.failed_units() == [] and flow.leftover_scopes() == []


def _started(flow: Flow, job_id: str) -> float:
    """When the job's first instruction ran (its stamp), once it did."""
    deadline = time.monotonic() + 30
    while not flow.sb.path(f"{flow.root}/started-{job_id}").exists():
        assert time.monotonic() < deadline, flow.diagnose()
        time.sleep(0.05)
    time.sleep(0.05)  # date's write may still be on its way
    return flow.started_at(job_id)


def test_accounting_is_the_jobs_own_and_outlives_a_time_limit(flow: Flow) -> None:
    """A job of 1 MB is accounted as the scope's peak, not the processor's size
    (max_rss, carried over by the kernel, is no longer recorded); a job ended
    at its time limit, ten times over, always has its accounting (miniq ends it
    itself, keeping the scope until it is read); one that ignores SIGTERM ends
    by SIGKILL --stop-timeout later."""
    flow.add_job("mib", "#!/bin/sh\nhead -c 1048576 /dev/zero | cat > /dev/null\n")
    flow.add_job("forever", "#!/bin/sh\nexec sleep 300\n")
    flow.add_job("stubborn", "#!/bin/sh\ntrap '' TERM\nsleep 300 &\nwait; wait\n")
    small = flow.cli("enqueue", "mib").stdout.strip()
    timed = [flow.cli("enqueue", "--timeout", "0.5s", "forever").stdout.strip() for _ in range(10)]
    stubborn = flow.cli("enqueue", "--timeout", "1s", "--stop-timeout", "1s", "stubborn").stdout.strip()
    flow.wait_final([small, *timed, stubborn], timeout=180)
    result = flow.record(small)["result"]
    assert "max_rss" not in result and result["memory_peak"] is not None
    assert result["memory_peak"] < 8 * 2**20, result["memory_peak"]  # the job's, not the processor's 16 MB and more
    for job_id in timed:
        r = flow.record(job_id)["result"]
        assert (r["outcome"], r["signal"]) == ("timeout", "SIGTERM"), r
        assert r["memory_peak"] is not None and r["cpu_usec"] is not None and r["oom_kills"] is not None, r
    r = flow.record(stubborn)["result"]
    assert (r["outcome"], r["signal"]) == ("timeout", "SIGKILL") and 2 <= r["duration"] < 10, r
    print(f"1 MiB job: memory_peak {result['memory_peak'] / 2**20:.1f} MiB; stubborn job ended after {r['duration']:.1f} s")
