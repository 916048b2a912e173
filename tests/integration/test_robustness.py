"""One bad file, job or crash never stops the queue, and nothing leaks.

Against the real systemd test bed, with root's system queue installed the
README way (and alice's and bob's user queues for privacy): every kind of
planted entry; a refused scope; a job that kills its processor; kill -9 of
the processor; daemon-reloads while jobs run; a full disk while results are
recorded; a million lines of output; another user; and `miniq wait` on a
busy queue.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from planted import PLANTS, Plant, age, leaked, plant_name
from testbed.sandbox import Sandbox

from miniq.core.job import new_id

from .flows import Flow

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def flow(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    f = Flow(sandbox, None, "--system")
    f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    f.add_job("ok", '#!/bin/sh\necho ok "$@"\n')
    yield f


def final_record(flow: Flow, job_id: str, timeout: float = 60) -> dict[str, object]:
    flow.wait_final([job_id], timeout=timeout)
    return flow.record(job_id)


@pytest.mark.parametrize("where", ["queue", "delayed", "running"])
@pytest.mark.parametrize("plant", PLANTS, ids=[p.kind for p in PLANTS])
def test_planted_entry(flow: Flow, plant: Plant, where: str) -> None:
    outside = flow.sb.path("/srv/outside")
    outside.mkdir(parents=True, exist_ok=True)
    bad_id = new_id()
    entry = flow.sb.path(f"{flow.root}/{where}/{plant_name(where, bad_id)}")
    # Made aside, then moved in with one rename: a lingering processor must
    # not see it half made.
    staging = outside / f"staging-{bad_id}"
    plant.make(staging, outside, lambda p: Path("/srv/outside") / p.name)
    if where == "running":
        # A claim whose holder stopped renewing it an hour ago: recovered when
        # a processor starts (or a quarter of the lease later, if one runs).
        age(staging)
        flow.pause("miniq-process.path")
    staging.rename(entry)
    good = flow.cli("enqueue", "ok", "after", plant.kind).stdout.strip()
    if where == "running":
        flow.resume("miniq-process.path")
    assert final_record(flow, good)["state"] == "done"
    record = flow.sb.path(f"{flow.root}/failed/{bad_id}.json")
    deadline = time.monotonic() + 30
    while not record.exists():
        assert time.monotonic() < deadline, flow.diagnose()
        time.sleep(0.1)
    bad = json.loads(record.read_text())
    assert bad["result"]["outcome"] == "rejected" and bad["result"]["reason"].startswith("unusable job file: "), bad
    assert not entry.exists() and not entry.is_symlink()
    assert flow.failed_units() == []
    assert leaked(flow.sb.path(flow.root)) == []


def test_a_refused_scope_fails_the_job_at_once(flow: Flow) -> None:
    """An administrator masked the slice jobs go in: systemd refuses each scope."""
    flow.pause()
    flow.sh(f"printf '[processor]\\nslice = jobs.slice\\n' > {flow.root}/miniq.conf && systemctl mask jobs.slice")
    try:
        job_id = flow.cli("enqueue", "ok").stdout.strip()
        start = time.monotonic()
        flow.run(["systemctl", "start", "--no-block", "miniq-process.service"])
        flow.wait_final([job_id], timeout=30)
        waited = time.monotonic() - start
        print(f"refused scope: job recorded {waited:.2f} s after the processor was started")
    finally:
        flow.sh(f"rm {flow.root}/miniq.conf && systemctl unmask jobs.slice")
        flow.resume()
    result = flow.record(job_id)["result"]
    assert result["outcome"] == "not-started", result  # type: ignore[index]
    assert result["reason"] == (  # type: ignore[index]
        f"systemd refused the scope miniq-job-{job_id}.scope: systemd refused StartTransientUnit: "
        "Unit jobs.slice is masked. (org.freedesktop.systemd1.UnitMasked)"
    )
    assert waited < 5
    assert flow.failed_units() == []


POISON = "#!/bin/sh\necho poisoned\nkill -9 $PPID\nexec sleep 60\n"


def test_a_job_that_kills_its_processor_does_not_block_the_others(flow: Flow) -> None:
    flow.add_job("poison", POISON)
    poison = flow.cli("enqueue", "poison").stdout.strip()
    good = [flow.cli("enqueue", "ok", str(i)).stdout.strip() for i in range(5)]
    flow.wait_final([poison, *good], timeout=120)
    assert all(flow.record(g)["state"] == "done" for g in good)
    record = flow.record(poison)
    result = record["result"]
    assert record["state"] == "failed" and result["outcome"] == "interrupted", result  # type: ignore[index]
    assert "interrupted 3 times" in result["reason"] and "max-interruptions = 3" in result["reason"]  # type: ignore[index]
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted"] * 3  # type: ignore[index]
    assert flow.cli("wait", poison, check=False).returncode == 126
    first_good = min(flow.record(g)["result"]["ended"] for g in good)  # type: ignore[index]
    assert first_good < record["result"]["ended"], "the good jobs waited for the poison job"  # type: ignore[index]
    assert flow.failed_units() == [] and flow.leftover_scopes() == []
    # A cancel of such a job works too, even while its processor keeps dying.
    again = flow.cli("enqueue", "poison").stdout.strip()
    flow.wait_running(again)
    out = flow.cli("cancel", again, timeout=90).stdout
    assert out.strip() == f"cancelled {again} (was running)"
    assert flow.record(again)["result"]["outcome"] == "cancelled"  # type: ignore[index]
    # Its processor was dead when the cancel came: the cancel stopped what was left of the run.
    assert flow.leftover_scopes() == []


def test_kill_9_of_the_processor_mid_job(flow: Flow) -> None:
    flow.add_job("long", "#!/bin/sh\necho start\nsleep 4\necho end\n")
    job_id = flow.cli("enqueue", "long").stdout.strip()
    flow.wait_running(job_id)
    main_pid = flow.run(["systemctl", "show", "-P", "MainPID", "miniq-process.service"]).stdout.strip()
    flow.run(["kill", "-9", main_pid])
    killed = time.monotonic()
    handled = None
    while handled is None and time.monotonic() - killed < 10:
        record = flow.record(job_id)
        if record.get("attempts") and record["attempts"][0]["outcome"] == "interrupted":  # type: ignore[index]
            handled = time.monotonic() - killed
        time.sleep(0.05)
    print(f"kill -9 of the processor: job recovered {handled} s later")
    assert handled is not None and handled < 5
    assert flow.failed_units() == []
    record = final_record(flow, job_id)
    assert record["state"] == "done"
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted", "exited"]  # type: ignore[index]
    assert record["attempts"][0]["reason"].startswith("its processor (PID ")  # type: ignore[index]
    assert flow.failed_units() == [] and flow.leftover_scopes() == []


# The processes of scope $0 (PID, name, start time): systemd's own hierarchy
# on a hybrid host, else the unified one.
SCOPE_PROCESSES = """
cg=$(systemctl show -P ControlGroup "$0")
for m in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified /sys/fs/cgroup; do
  [ -e "$m$cg/cgroup.procs" ] && break
done
for p in $(cat "$m$cg/cgroup.procs"); do
  stat=$(cat /proc/$p/stat 2>/dev/null) || continue
  set -- $stat
  name=${2#?}
  echo "$p ${name%?} ${22}"
done
"""
# Writes the other processes of its own scope (not itself, its shells and grep) to a file.
SCOPE_MATES = f"""#!/bin/sh
sh -c '{SCOPE_PROCESSES}' "miniq-job-$MINIQ_JOB_ID.scope" | grep -v -e "^$$ " -e " sh " -e " grep " > "$MINIQ_ROOT/mates-$MINIQ_JOB_ID"
"""


def test_one_keeper_serves_jobs_in_a_row_and_goes_with_the_queue(flow: Flow) -> None:
    """scope.py: the keeper moves from each job's scope to the next one's;
    it ends, and the last scope goes, once the queue is empty."""
    flow.add_job("mates", SCOPE_MATES)
    flow.pause()
    try:
        ids = flow.cli("enqueue", "--stdin", "mates", input="1\n2\n3\n4\n").stdout.split()
        flow.run(["systemctl", "start", "--no-block", "miniq-process.service"])  # one run, all four
        flow.wait_final(ids, timeout=60)
        mates = [flow.sb.path(f"{flow.root}/mates-{i}").read_text().splitlines() for i in ids]
        assert all(len(m) == 1 for m in mates), mates  # the job's one scope mate: the keeper
        assert len({m[0] for m in mates}) == 1, mates  # the same process (PID and start time) each time
        pid, name, _ = mates[0][0].split()
        assert name == "cat"
        # The queue is empty and the processor lingers (2 s) for more jobs: the keeper has ended.
        alive = flow.run(["test", "-e", f"/proc/{pid}"], check=False).returncode == 0
        assert flow.unit_state("miniq-process.service") == "activating", "the processor no longer lingered"
        assert not alive, "the keeper stayed while the queue was empty"
        assert flow.leftover_scopes() == []
    finally:
        flow.resume()
    assert flow.failed_units() == []


def test_the_keeper_ends_with_its_processor_however_it_dies(flow: Flow) -> None:
    """The keeper reads a pipe only its processor holds: a kill -9 of the
    processor ends it at once, before the restarted processor recovers the
    job (so a processor killed between two jobs leaves no scope behind)."""
    flow.add_job("long", "#!/bin/sh\necho start\nsleep 4\necho end\n")
    job_id = flow.cli("enqueue", "long").stdout.strip()
    flow.wait_running(job_id)

    def names() -> dict[str, str]:
        """The scope's processes: name by PID."""
        out = flow.run(["sh", "-c", SCOPE_PROCESSES, f"miniq-job-{job_id}.scope"]).stdout
        return {line.split()[0]: line.split()[1] for line in out.splitlines()}

    keepers = [pid for pid, name in names().items() if name == "cat"]
    assert len(keepers) == 1, names()
    main_pid = flow.run(["systemctl", "show", "-P", "MainPID", "miniq-process.service"]).stdout.strip()
    flow.run(["kill", "-9", main_pid])
    killed = time.monotonic()
    while keepers[0] in names() and time.monotonic() - killed < 5:
        time.sleep(0.01)
    gone = time.monotonic() - killed
    left = names()
    print(f"the keeper ended {gone:.3f} s after its processor; the scope then held {sorted(left.values())}")
    assert keepers[0] not in left
    # Sooner than the restart (RestartSec=1s) could have recovered the job: the job still runs.
    assert "sleep" in left.values(), left
    record = final_record(flow, job_id)
    assert record["state"] == "done"
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted", "exited"]  # type: ignore[index]
    assert flow.failed_units() == [] and flow.leftover_scopes() == []


def test_daemon_reloads_while_jobs_run_lose_nothing(flow: Flow) -> None:
    """An administrator's `systemctl daemon-reload`s, back to back, while jobs
    are queued and run: systemd reloads under every scope start and job
    signal; every job runs once and succeeds, no unit fails."""
    reloader = flow.sb.popen(["sh", "-c", "end=$(($(date +%s) + 12)); n=0; while [ $(date +%s) -lt $end ]; do"
                              " systemctl daemon-reload; n=$((n + 1)); done; echo $n"])  # fmt: skip
    ids = []
    while reloader.poll() is None:
        ids.append(flow.cli("enqueue", "ok", "reload", str(len(ids))).stdout.strip())
        time.sleep(0.1)
    reloads = int(reloader.communicate()[0])
    print(f"{reloads} daemon-reloads while {len(ids)} jobs were queued")
    assert reloads >= 10 and len(ids) >= 20
    flow.wait_final(ids, timeout=120)
    records = [flow.record(i) for i in ids]
    assert [r["state"] for r in records] == ["done"] * len(ids), [r.get("result") for r in records if r["state"] != "done"]
    assert all(len(r["attempts"]) == 1 for r in records), [r["attempts"] for r in records if len(r["attempts"]) != 1]
    assert flow.failed_units() == [] and flow.leftover_scopes() == []


def test_a_full_disk_while_results_are_recorded(flow: Flow) -> None:
    """A root on a small tmpfs that fills up: no job runs twice, nothing is lost."""
    tiny = "/mnt/tiny"
    flow.sh(f"mkdir -p {tiny} && mount -t tmpfs -o size=2m tmpfs {tiny} && rm -f /var/tmp/tiny-runs.log")
    try:
        flow.sh(f"mkdir -p {tiny}/jobs && printf '#!/bin/sh\\necho \"$MINIQ_JOB_ID\" >> /var/tmp/tiny-runs.log\\necho ran\\n' "
                f"> {tiny}/jobs/count.job && chmod +x {tiny}/jobs/count.job")  # fmt: skip
        ids = [flow.run([flow.miniq, "--root", tiny, "enqueue", "count"]).stdout.strip() for _ in range(12)]
        flow.sh(f"dd if=/dev/zero of={tiny}/filler bs=4k 2>/dev/null; true")
        run = ["systemd-run", "--unit=miniq-tiny", "--collect", "--no-block", f"--setenv=MINIQ_ROOT={tiny}", flow.miniq, "process"]
        flow.run(run)
        deadline = time.monotonic() + 30
        while "No space left on device" not in flow.run(["journalctl", "-u", "miniq-tiny", "--no-pager"]).stdout:
            assert time.monotonic() < deadline, flow.run(["journalctl", "-u", "miniq-tiny", "--no-pager"]).stdout
            time.sleep(0.2)
        time.sleep(2)
        flow.sh(f"rm {tiny}/filler")
        deadline = time.monotonic() + 60
        while len(list(flow.sb.path(f"{tiny}/done").iterdir())) < len(ids):
            assert time.monotonic() < deadline, flow.run(["journalctl", "-u", "miniq-tiny", "--no-pager"]).stdout[-3000:]
            time.sleep(0.2)
        runs = flow.sb.path("/var/tmp/tiny-runs.log").read_text().split()
        log = flow.run(["journalctl", "-u", "miniq-tiny", "--no-pager", "-o", "cat"]).stdout
    finally:
        flow.sh(f"systemctl stop miniq-tiny 2>/dev/null; umount {tiny}", check=False)
    assert sorted(runs) == sorted(ids), "a job ran twice or not at all"
    assert "keeping its result and trying again" in log


def test_a_million_lines(flow: Flow) -> None:
    flow.add_job("flood", "#!/bin/sh\nseq 1 1000000\n")
    flow.add_job("five", "#!/bin/sh\nseq 1 5\n")
    flood = flow.cli("enqueue", "flood").stdout.strip()
    after = flow.cli("enqueue", "five").stdout.strip()
    flow.wait_final([flood, after], timeout=300)
    result = flow.record(flood)["result"]
    assert result["output_lines"] == 1_000_000 and result["output_dropped"] > 900_000, result  # type: ignore[index]
    finished = flow.run(["journalctl", "--no-pager", "-o", "cat", f"MINIQ_JOB_ID={flood}", "MINIQ_EVENT=finished"]).stdout
    assert f"job {flood} (flood) finished: exit code 0" in finished
    logs = flow.cli("logs", flood, timeout=300)
    assert "line(s) of this job's output dropped" in logs.stderr
    assert len(logs.stdout.splitlines()) == 1_000_000 - result["output_dropped"]  # type: ignore[index]
    assert flow.cli("logs", after).stdout.split() == ["1", "2", "3", "4", "5"]


def test_another_user_reads_nothing(flow: Flow, repo: str) -> None:
    flow.sb.add_user("alice")
    flow.sb.add_user("bob")
    alice = Flow(flow.sb, "alice", "--user")
    alice.install(repo, str(flow.sb.wheelhouse))  # type: ignore[attr-defined]
    alice.add_job("secret", "#!/bin/sh\necho done\n")
    job_id = alice.cli("enqueue", "secret", "password=hunter2").stdout.strip()
    alice.wait_final([job_id], timeout=30)
    for path in (alice.root, f"{alice.root}/done", f"{alice.root}/done/{job_id}.json", "/var/lib/miniq", "/var/lib/miniq/done"):
        proc = flow.sb.run(["cat", path], user="bob", check=False)
        assert proc.returncode != 0 and "hunter2" not in proc.stdout
    proc = flow.sb.run(["ls", f"{alice.root}/done"], user="bob", check=False)
    assert proc.returncode != 0 and "Permission denied" in proc.stderr
    proc = flow.sb.run([alice.miniq, "--root", alice.root, "show", job_id], user="bob", check=False)
    assert proc.returncode == 5 and proc.stderr.startswith("Error: permission denied"), proc.stderr
    assert flow.sb.run(["stat", "-c", "%a", alice.root, f"{alice.root}/done/{job_id}.json"]).stdout.split() == ["700", "600"]


def test_wait_on_2000_jobs_of_a_busy_queue(flow: Flow) -> None:
    flow.add_job("quick", '#!/bin/sh\necho "$1"\n')
    ids = flow.enqueue_many("quick", 2000, numbered=True)
    waiters = [subprocess.Popen(
        ["nsenter", "-t", str(flow.sb.pid1), "-a", "--", flow.miniq, "wait", *chunk],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) for chunk in [ids, *[ids[i : i + 1] for i in range(0, 2000, 200)]]]  # fmt: skip
    results = [(w.wait(timeout=600), w.stderr.read()) for w in waiters]  # type: ignore[union-attr]
    assert results == [(0, "")] * len(waiters)
    assert shlex.join(["ok"]) == "ok"
