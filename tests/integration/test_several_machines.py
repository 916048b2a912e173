"""Many machines, one queue: claims that survive hosts, clones and partitions.

Two (or three) systemd sandboxes share one root, each in its own PID
namespace like separate machines, each running the units for it.  Leases
are 10 s and the timers run every 10 s, to keep the tests short.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, Machine, shared_cluster

pytestmark = pytest.mark.systemd

LEASE = 10.0
TIMER = 10.0


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, repo: str) -> Iterator[Cluster]:
    with shared_cluster(tmp_path_factory, wheelhouse, repo, LEASE) as c:
        yield c


def exactly_once(cluster: Cluster, hostnames: tuple[str, str]) -> None:
    cluster.boot("a", hostnames[0], parallel=1)
    cluster.boot("b", hostnames[1], parallel=2)
    ids = cluster.enqueue_many("a", "count", 1000) + cluster.enqueue_many("b", "count", 1000)
    waited = cluster.wait_final(ids, timeout=600)
    print(f"2000 jobs on two machines ({', '.join(hostnames)}) finished {waited:.1f} s after the last enqueue")
    runs = Counter(job_id for job_id, _ in cluster.runs())
    assert sorted(runs) == sorted(ids), "a job never ran, or something else ran"
    assert [job_id for job_id, n in runs.items() if n > 1] == [], "jobs ran twice"
    for job_id in ids:
        record = cluster.record(job_id)
        assert record is not None and record["state"] == "done"
        assert len(record["attempts"]) == 1, record  # type: ignore[arg-type]
    hosts = Counter(host for _, host in cluster.runs())
    print(f"runs per host: {dict(hosts)}")
    assert all(m.flow.failed_units() == [] for m in cluster.machines.values())


def test_exactly_once_with_distinct_hostnames(cluster: Cluster) -> None:
    exactly_once(cluster, ("machine-a", "machine-b"))


def test_exactly_once_with_the_same_hostname(cluster: Cluster) -> None:
    exactly_once(cluster, ("clone", "clone"))


def running_on(cluster: Cluster, job_id: str, host: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (job_id, host) not in cluster.runs():
        assert time.monotonic() < deadline, f"{job_id} did not start on {host}"
        time.sleep(0.1)


# The first run takes long (until its machine is lost), a run after that a second.
LONG = """#!/bin/sh
echo "$MINIQ_JOB_ID $(hostname)" >> "$SHARED/log/runs.log"
if [ "$MINIQ_ATTEMPT" = 1 ]; then exec sleep 600; fi
sleep 1
"""


def long_job_on_a(cluster: Cluster) -> tuple[Machine, Machine, str]:
    """Machines a and b, and a long job running on a (b paused while a claims it)."""
    cluster.add_job("long", LONG)
    a = cluster.boot("a", "machine-a")
    b = cluster.boot("b", "machine-b")
    b.flow.pause()
    job_id = cluster.enqueue("a", "long")
    running_on(cluster, job_id, "machine-a")
    return a, b, job_id


def test_a_machine_that_loses_power_has_its_job_taken_over(cluster: Cluster) -> None:
    _, b, job_id = long_job_on_a(cluster)
    b.flow.resume()
    cluster.power_cut("a")
    cut = time.monotonic()
    cluster.wait_final([job_id], timeout=LEASE + TIMER + 30)
    took = time.monotonic() - cut
    print(f"power cut: the job finished on machine-b {took:.1f} s after machine-a died (lease {LEASE:g} s, timer {TIMER:g} s)")
    assert took <= LEASE + TIMER + 10
    record = cluster.record(job_id)
    assert record is not None and record["state"] == "done"
    attempts = record["attempts"]
    assert [(a["outcome"], a.get("lost_host")) for a in attempts] == [("interrupted", "machine-a"), ("exited", None)]  # type: ignore[union-attr]
    assert "machine-a stopped renewing its lease" in attempts[0]["reason"]  # type: ignore[index]
    assert record["result"]["host"] == "machine-b"  # type: ignore[index]
    assert Counter(h for j, h in cluster.runs() if j == job_id) == {"machine-a": 1, "machine-b": 1}


def test_a_frozen_processor_is_fenced(cluster: Cluster) -> None:
    a, b, job_id = long_job_on_a(cluster)
    b.flow.resume()
    frozen = cluster.freeze("a")
    cluster.wait_final([job_id], timeout=LEASE + TIMER + 30)
    published = cluster.record(job_id)
    assert a.job_scopes() == [f"miniq-job-{job_id}.scope"], "the frozen machine's job runs on until it resumes"
    cluster.thaw("a", frozen)
    deadline = time.monotonic() + 15
    while a.job_scopes():
        assert time.monotonic() < deadline, a.journal()[-3000:]
        time.sleep(0.1)
    time.sleep(1)
    assert cluster.record(job_id) == published, "a second result was published"
    assert published is not None and published["state"] == "done" and published["result"]["host"] == "machine-b"  # type: ignore[index]
    assert [a_["outcome"] for a_ in published["attempts"]] == ["interrupted", "exited"]  # type: ignore[union-attr]
    assert "was taken over by another processor" in a.journal()


def test_a_reboot_recovers_stale_claims_and_takes_no_live_one(cluster: Cluster) -> None:
    cluster.add_job("long", LONG)
    cluster.add_job("hold", '#!/bin/sh\necho "$MINIQ_JOB_ID $(hostname)" >> "$SHARED/log/runs.log"\nsleep 40\n')
    cluster.boot("a", "machine-a", parallel=2)
    b = cluster.boot("b", "machine-b")
    b.flow.pause()
    stale = [cluster.enqueue("a", "long") for _ in range(2)]
    for job_id in stale:
        running_on(cluster, job_id, "machine-a")
    cluster.power_cut("a")
    b.flow.resume()
    live = cluster.enqueue("b", "hold")
    running_on(cluster, live, "machine-b")
    # machine-a comes back: same host name, same root, its old claims still there.
    cluster.boot("a2", "machine-a")
    cluster.wait_final(stale, timeout=LEASE + TIMER + 40)
    for job_id in stale:
        record = cluster.record(job_id)
        assert record is not None and record["attempts"][0]["lost_host"] == "machine-a"  # type: ignore[index]
    cluster.wait_final([live], timeout=60)
    record = cluster.record(live)
    assert record is not None and len(record["attempts"]) == 1 and record["result"]["host"] == "machine-b"  # type: ignore[arg-type,index]
    assert Counter(j for j, _ in cluster.runs())[live] == 1


def test_cancel_reaches_a_job_on_another_machine(cluster: Cluster) -> None:
    _, b, job_id = long_job_on_a(cluster)
    out = b.flow.run([b.flow.miniq, "--root", cluster.root, "cancel", job_id], timeout=90).stdout
    assert out.strip() == f"cancelled {job_id} (was running)"
    record = cluster.record(job_id)
    assert record is not None and record["result"]["outcome"] == "cancelled" and record["result"]["host"] == "machine-a"  # type: ignore[index]
    assert cluster.machines["a"].leftover_scopes() == []


def test_list_show_and_doctor_tell_an_expired_lease(cluster: Cluster) -> None:
    a, b, job_id = long_job_on_a(cluster)
    rows = b.flow.run([b.flow.miniq, "--root", cluster.root, "list", "--json"]).stdout
    assert '"lease": "live"' in rows and '"host": "machine-a"' in rows
    cluster.power_cut("a")
    time.sleep(LEASE + 1)
    shown = b.flow.run([b.flow.miniq, "--root", cluster.root, "show", job_id]).stdout
    assert "host:        machine-a (lease expired" in shown, shown
    doctor = b.flow.run([b.flow.miniq, "--root", cluster.root, "doctor"], check=False).stdout
    assert f"problem: job {job_id} is held by machine-a, but machine-a stopped renewing its lease" in doctor
    assert f"fix: miniq requeue {job_id}" in doctor
    path = b.flow.run([b.flow.miniq, "--root", cluster.root, "requeue", job_id]).stdout
    assert path.strip() == f"{job_id} is now queue"
    del a
