"""Day-two features against real systemd: pause across a reboot, a per-type
cap over two machines with one of them killed, unique enqueues racing from
two machines, and, in a user's own queue, recurring jobs (not stacked; a run
missed while the machine was down happens at boot), follow-up jobs and the
Prometheus textfile a processor run refreshes.

"Machines" are systemd sandboxes sharing one root (cluster.py); a reboot is
a new sandbox on the same shared directories, as a machine that lost power
comes back with its disk and nothing else.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.sandbox import Sandbox

from .cluster import Cluster, shared_cluster

pytestmark = pytest.mark.systemd

LEASE = 10.0


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, repo: str) -> Iterator[Cluster]:
    with shared_cluster(tmp_path_factory, wheelhouse, repo, LEASE) as c:
        yield c


def held(cluster: Cluster) -> list[str]:
    return sorted(p.name for p in (cluster.shared / "root" / "delayed").glob("held-*.json"))


def wait_for(what: str, check: object, timeout: float) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout, f"{what}: not after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - start


def test_a_pause_holds_jobs_across_a_reboot(cluster: Cluster) -> None:
    a = cluster.boot("a", "machine-a")
    a.flow.run([a.flow.miniq, "--root", cluster.root, "pause"])
    ids = [cluster.enqueue("a", "count", str(i)) for i in range(3)]
    # The path unit starts the processor, which holds them: out of queue/, so it is not started again and again.
    wait_for("jobs held", lambda: len(held(cluster)) == 3, 30)
    assert list((cluster.shared / "root" / "queue").glob("*.json")) == []
    listed = a.flow.run([a.flow.miniq, "--root", cluster.root, "list"]).stdout
    assert listed.startswith("paused: the whole queue (by root on machine-a at ") and listed.count("held (paused or at cap)") == 3
    cluster.power_cut("a")
    b = cluster.boot("b", "machine-b")  # the reboot: a machine with the same disk
    b.flow.run(["systemctl", "start", "miniq-process.service"])  # as the timer would
    time.sleep(2)
    assert cluster.runs() == [] and len(held(cluster)) == 3, "a pause holds after the reboot"
    doctor = b.flow.run([b.flow.miniq, "--root", cluster.root, "doctor"], check=False)
    assert "problem: the whole queue is paused" in doctor.stdout and doctor.returncode == 1
    t0 = time.monotonic()
    assert b.flow.run([b.flow.miniq, "--root", cluster.root, "resume"]).stdout == "resumed the whole queue\n"
    cluster.wait_final(ids, timeout=30)
    print(f"after resume the 3 held jobs finished in {time.monotonic() - t0:.1f} s")
    assert [job_id for job_id, _ in cluster.runs()] == ids, "in their order"
    assert b.flow.failed_units() == []


ONE = """#!/bin/sh
echo "start $MINIQ_JOB_ID $(hostname) $(date +%s.%N)" >> "$SHARED/log/spans.log"
sleep 3
echo "end $MINIQ_JOB_ID $(hostname) $(date +%s.%N)" >> "$SHARED/log/spans.log"
"""


def spans(cluster: Cluster) -> list[tuple[str, str, str, float]]:
    path = cluster.shared / "log" / "spans.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(w[0], w[1], w[2], float(w[3])) for w in (line.split() for line in lines) if len(w) == 4]


def test_a_type_cap_holds_over_two_machines_and_a_dead_machines_slot_is_freed(cluster: Cluster) -> None:
    cluster.add_job("one", ONE)
    cluster.configure(f"[processor]\nlease = {LEASE:g}s\n\n[job:one]\nparallel = 1\n")
    machines = {"a": cluster.boot("a", "machine-a", parallel=2), "b": cluster.boot("b", "machine-b", parallel=2)}
    ones = [cluster.enqueue("a", "one") for _ in range(5)]
    counts = [cluster.enqueue("b", "count", str(i)) for i in range(6)]
    wait_for("a job of type one started", lambda: any(s[0] == "start" for s in spans(cluster)), 30)
    _, victim, host, _ = spans(cluster)[0]
    name = "a" if host == "machine-a" else "b"
    cluster.power_cut(name)
    cut = time.time()
    survivor = machines["b" if name == "a" else "a"]
    waited = cluster.wait_final(ones + counts, timeout=LEASE + 120)
    print(f"cut {host} while it ran {victim}; every job finished {waited:.1f} s later on {survivor.hostname}")
    # One at a time over both machines; the cut run ended at the cut.
    runs: dict[tuple[str, str], list[float]] = {}
    for _, job_id, where, t in spans(cluster):
        runs.setdefault((job_id, where), []).append(t)
    intervals = sorted((ts[0], ts[1] if len(ts) > 1 else cut, job_id, where) for (job_id, where), ts in runs.items())
    for first, second in zip(intervals, intervals[1:]):
        assert first[1] <= second[0], f"two jobs of type one ran at once: {first} and {second}"
    assert (victim, host) in runs and len(runs[(victim, host)]) == 1, "the victim's run was cut"
    record = cluster.record(victim)
    assert record is not None and record["state"] == "done"
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted", "exited"]  # type: ignore[index,union-attr]
    not_done = {i: cluster.record(i) for i in ones + counts if cluster.record(i)["state"] != "done"}  # type: ignore[index]
    if not_done:
        for m in cluster.machines.values():
            if m.sandbox.pid1:
                print("JOURNAL", m.name, m.flow.run(["journalctl", "--no-pager", "-o", "short-precise", "-n", "400"], check=False).stdout)
    assert not_done == {}, [(i, r["result"]) for i, r in not_done.items()]  # type: ignore[index]
    slots = sorted(p.name for p in (cluster.shared / "root" / "slots" / "1-one").iterdir())
    assert slots == ["0"], f"the slot is free at the end: {slots}"
    assert survivor.flow.failed_units() == []


def test_racing_unique_enqueues_from_two_machines_make_one_job(cluster: Cluster) -> None:
    a = cluster.boot("a", "machine-a")
    b = cluster.boot("b", "machine-b")
    a.flow.run([a.flow.miniq, "--root", cluster.root, "pause"])  # every job stays unfinished: the keys stay held
    keys, tries = 8, 4
    script = (
        f"for k in $(seq {keys}); do for i in $(seq {tries}); do "
        f"( out=$({a.flow.miniq} --root {cluster.root} enqueue --unique-key k$k count k$k 2>/dev/null); code=$?; "
        'echo "k$k $code $out" ) & done; wait; done'
    )
    procs = [m.sandbox.popen(["/bin/bash", "-c", script]) for m in (a, b)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    printed: dict[str, set[str]] = {}
    codes: dict[str, list[int]] = {}
    for out in outputs:
        for line in out.splitlines():
            key, code, job_id = line.split()
            printed.setdefault(key, set()).add(job_id)
            codes.setdefault(key, []).append(int(code))
    assert len(printed) == keys
    for key in printed:
        assert len(printed[key]) == 1, f"{key}: two jobs were added: {printed[key]}"
        assert sorted(codes[key]) == [0] + [7] * (2 * tries - 1), codes[key]
    root = cluster.shared / "root"
    files = [p for d in ("queue", "delayed") for p in (root / d).glob("*.json")]
    assert len(files) == keys
    b.flow.run([b.flow.miniq, "--root", cluster.root, "resume"])
    ids = [next(iter(v)) for v in printed.values()]
    cluster.wait_final(ids, timeout=60)
    assert sorted(job_id for job_id, _ in cluster.runs()) == sorted(ids)


# -- a user's own queue: every, follow-ups, the textfile -------------------------------------------

USER, UID = "carol", 2500
SLOW = """#!/bin/sh
echo "start $MINIQ_JOB_ID $(date +%s.%N)" >> "$HOME/slow.log"
sleep 5
echo "end $MINIQ_JOB_ID $(date +%s.%N)" >> "$HOME/slow.log"
"""
NOTIFY = """#!/bin/sh
echo "follow-up of $1: $MINIQ_FOLLOWS_NAME $MINIQ_FOLLOWS_OUTCOME status $MINIQ_FOLLOWS_STATUS"
"""


class Carol:
    """carol on one boot of her machine; her home (miniq, units, timer stamps, queue) is on a disk that outlives it."""

    def __init__(self, scratch: Path, disk: Path, repo: str, wheelhouse: str) -> None:
        name = f"carol{time.monotonic_ns() % 100000}"
        self.sb = Sandbox(scratch / f"boot-{time.monotonic_ns()}", name, binds=[Path(repo), Path(wheelhouse)], shared=[disk])
        self.sb.boot()
        self.sb.sh(f"useradd --no-create-home --home-dir /home/{USER} --uid {UID} --shell /bin/bash {USER}"
                   f" && mkdir -p /home/{USER} && mount --bind {disk} /home/{USER} && systemctl start user@{UID}.service")  # fmt: skip
        self.home = f"/home/{USER}"
        self.miniq = f"{self.home}/.local/bin/miniq"
        self.root = f"{self.home}/.local/state/miniq"

    def run(self, *args: str, check: bool = True) -> object:
        return self.sb.run(list(args), user=USER, check=check)

    def cli(self, *args: str, check: bool = True) -> str:
        return str(self.sb.run([self.miniq, *args], user=USER, check=check).stdout)

    def add_job(self, name: str, body: str) -> None:
        self.sb.sh(f"mkdir -p {self.root}/jobs && cat > {self.root}/jobs/{name}.job && chmod +x {self.root}/jobs/{name}.job", user=USER,
                   input=body)  # fmt: skip

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.cli("list", "--all", "--json").strip()[1:-1].split(",\n") if line.strip()]


@pytest.fixture
def carol_disk(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    from conftest import require_testbed

    require_testbed()
    disk = tmp_path_factory.mktemp("carol-home")
    disk.chmod(0o755)
    import os

    os.chown(disk, UID, UID)
    return disk


def test_recurring_jobs_follow_ups_and_metrics_in_a_users_queue(carol_disk: Path, tmp_path: Path, wheelhouse: Path, repo: str) -> None:
    carol = Carol(tmp_path, carol_disk, repo, str(wheelhouse))
    try:
        env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
        out = str(carol.sb.run(["bash", f"{repo}/packaging/install.sh"], user=USER, env=env, timeout=300).stdout)
        assert "your queue is" in out
        carol.add_job("slow", SLOW)
        carol.add_job("notify", NOTIFY)
        carol.add_job("fail", "#!/bin/sh\necho failing\nexit 3\n")
        carol.sb.sh(f"printf '[processor]\\nprometheus-file = {carol.home}/metrics/miniq.prom\\n' > {carol.root}/miniq.conf"
                    f" && mkdir -p {carol.home}/metrics", user=USER)  # fmt: skip

        # A follow-up job through real scopes, with its environment.
        failing = carol.cli("enqueue", "--on-failure", "notify", "fail").strip()
        wait_for("the follow-up ran", lambda: any(r.get("follows") == failing and r["state"] == "done" for r in carol.records()), 30)
        follow = next(r for r in carol.records() if r.get("follows") == failing)
        logs = carol.cli("logs", str(follow["id"]))
        assert logs == f"follow-up of {failing}: fail exited status 3\n", logs

        # Submit and wait in one command, its output streamed, its status returned.
        waited = carol.sb.run([carol.miniq, "enqueue", "--wait", "--logs", "fail"], user=USER, check=False)
        lines = waited.stdout.splitlines()
        assert waited.returncode == 3 and len(lines) == 2 and lines[1] == "failing", (waited.stdout, waited.stderr)
        # A batch from standard input, one job per line.
        ids = carol.sb.run([carol.miniq, "enqueue", "--wait", "notify", "x"], user=USER).stdout.split()
        batch = carol.sb.run([carol.miniq, "enqueue", "--stdin", "notify"], user=USER, input="one\n'two words'\n").stdout.split()
        assert len(ids) == 1 and len(batch) == 2
        assert carol.sb.run([carol.miniq, "wait", *batch], user=USER).returncode == 0
        assert carol.cli("logs", batch[1]).startswith("follow-up of two words:")

        # Every two seconds, a job of five: never two at once, no stack of waiting jobs.
        made = carol.cli("every", "*:*:0/2", "slow")
        every_id = made.split(":")[0]
        assert made.startswith(f"{every_id}: miniq-every-{every_id}.timer queues slow at *-*-* *:*:00/2; next: ")
        assert "miniq-every-" in str(carol.sb.run(["systemctl", "--user", "list-timers", "--all"], user=USER).stdout)
        time.sleep(13)
        listed = carol.cli("every", "--list")
        assert listed.splitlines()[1].startswith(f"{every_id}  *-*-* *:*:00/2  ")
        carol.cli("every", "--remove", every_id)
        assert carol.cli("every", "--list").splitlines()[1:] == []
        slow = [r for r in carol.records() if r["name"] == "slow"]
        print(f"13 s of a 2 s schedule of a 5 s job: {len(slow)} job(s) queued")
        assert 2 <= len(slow) <= 4, slow
        unfinished = [r for r in slow if r["state"] in ("queued", "delayed", "running")]
        assert len(unfinished) <= 1
        wait_for("the last slow job", lambda: all(r["state"] == "done" for r in carol.records() if r["name"] == "slow"), 30)
        log = carol.sb.run(["cat", f"{carol.home}/slow.log"], user=USER).stdout.split("\n")
        marks = [(w[0], float(w[2])) for w in (line.split() for line in log) if len(w) == 3]
        assert [k for k, _ in marks] == ["start", "end"] * (len(marks) // 2), "never two at once"

        # The textfile the processor refreshes, as Prometheus parses it.
        from prometheus_client.parser import text_string_to_metric_families

        def finished() -> dict[tuple[str, str], float]:
            text = carol.sb.run(["cat", f"{carol.home}/metrics/miniq.prom"], user=USER, check=False).stdout
            families = {f.name: f for f in text_string_to_metric_families(text)}
            family = families.get("miniq_finished_jobs")
            return {(s.labels["job"], s.labels["state"]): s.value for s in family.samples} if family else {}

        # Written when the last run's processor exits (it lingers 2 s for more jobs).
        wait_for("the textfile counts the slow jobs", lambda: finished().get(("slow", "done"), 0) == len(slow), 30)
        assert finished()[("fail", "failed")] == 2 and finished()[("notify", "done")] == 4

        # A run missed while the machine is off happens at boot (Persistent=true).
        due = int(time.time()) + 25
        when = str(carol.sb.run(["date", "-d", f"@{due}", "+%Y-%m-%d %H:%M:%S"]).stdout).strip()
        made = carol.cli("every", when, "notify", "missed")
        missed_id = made.split(":")[0]
    finally:
        carol.sb.close()  # the power cut, before the schedule's time
    time.sleep(max(due + 3 - time.time(), 0))
    carol = Carol(tmp_path, carol_disk, repo, str(wheelhouse))
    try:
        booted = time.monotonic()
        waited = wait_for("the missed run", lambda: any(r["argv"] == ["missed"] and r["state"] == "done" for r in carol.records()), 60)
        print(f"the run missed while the machine was off ran {waited:.1f} s after the user manager started")
        listed = carol.cli("every", "--list")
        assert missed_id in listed and time.monotonic() - booted < 60
        last = listed.splitlines()[1].split("  ")
        assert last[3].strip() != "-", listed  # systemd records the trigger
        assert shlex.split(listed.splitlines()[1])[-2:] == ["notify", "missed"]
    finally:
        carol.sb.close()
