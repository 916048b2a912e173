"""A system queue for every user: jobs run as whoever submitted them.

Root installs the system queue the README way; alice (in group lab) and bob
use it with `miniq --system ...` through the socket-activated helper.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

pytestmark = pytest.mark.systemd

WHOAMI = """#!/bin/sh
echo "id: $(id)"
echo "cwd: $(pwd)"
grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status
env | sort
"""

HOG = """#!/usr/bin/python3
chunks = [b"x" * (10 * 1024 * 1024) for i in range(60)]
print("allocated", len(chunks) * 10, "MB", flush=True)
"""


@pytest.fixture(scope="module")
def root(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    f = Flow(sandbox, None, "--system")
    f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    sandbox.run(["groupadd", "lab"])
    sandbox.add_user("alice")
    sandbox.add_user("bob")
    sandbox.run(["usermod", "-aG", "lab", "alice"])
    f.add_job("whoami", WHOAMI)
    f.add_job("hog", HOG)
    f.add_job("nap", "#!/bin/sh\nsleep 30\n")
    yield f


def as_user(flow: Flow, user: str, *args: str, check: bool = True, timeout: float = 120) -> Any:
    return flow.sb.run([flow.miniq, "--system", *args], user=user, check=check, timeout=timeout)


def test_each_job_runs_as_its_submitter(root: Flow) -> None:
    jobs = {user: as_user(root, user, "enqueue", "whoami").stdout.strip() for user in ("alice", "bob")}
    for user, job_id in jobs.items():
        assert as_user(root, user, "wait", job_id, timeout=60).returncode == 0
        out = as_user(root, user, "logs", job_id).stdout
        uid = root.sb.uid(user)
        gid = int(root.sb.run(["id", "-g", user]).stdout)
        [ids] = [line for line in out.splitlines() if line.startswith("id: ")]
        assert ids.startswith(f"id: uid={uid}({user}) gid={gid}({user}) groups={gid}({user})"), ids
        assert ("(lab)" in ids) == (user == "alice"), ids
        assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out and "NoNewPrivs:\t1" in out
        env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("id:"))
        assert env["HOME"] == f"/home/{user}" and env["USER"] == user and env["LOGNAME"] == user and env["SHELL"] == "/bin/bash"
        assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
        assert not {"SUDO_USER", "MAIL", "INVOCATION_ID", "NOTIFY_SOCKET", "MANAGERPID"} & set(env)
        assert f"cwd: /home/{user}" in out
        record = json.loads(root.cli("show", "--json", job_id).stdout)
        assert record["submitter"]["uid"] == uid and record["result"]["unit"] == f"miniq-job-{job_id}.scope"
        st = root.sb.run(["stat", "-c", "%u %a", f"/var/lib/miniq/done/{job_id}.json"]).stdout.split()
        assert st == [str(uid), "600"]


def test_limits_are_enforced_for_a_user_in_the_system_manager(root: Flow) -> None:
    job_id = as_user(root, "alice", "enqueue", "--memory-max", "64M", "hog").stdout.strip()
    assert as_user(root, "alice", "wait", job_id, check=False, timeout=60).returncode == 137
    result = json.loads(root.cli("show", "--json", job_id).stdout)["result"]
    assert result["outcome"] == "oom" and result["memory_peak"] <= 64 * 1024**2, result


def test_a_user_acts_on_their_own_jobs_only(root: Flow) -> None:
    root.pause()
    try:
        alices = as_user(root, "alice", "enqueue", "whoami", "secret-arg").stdout.strip()
        bobs = as_user(root, "bob", "enqueue", "whoami").stdout.strip()
        denied = f"Error: job {alices} belongs to another user; you may act only on your own jobs\n"
        for command in (["show", alices], ["logs", alices], ["cancel", alices], ["wait", alices], ["retry", alices]):
            proc = as_user(root, "bob", *command, check=False)
            assert (proc.returncode, proc.stderr, "secret-arg" in proc.stdout) == (5, denied, False), command
        listed = {user: {r["id"] for r in json.loads(as_user(root, user, "list", "--all", "--json").stdout)} for user in ("alice", "bob")}
        assert bobs in listed["bob"] and alices in listed["alice"]
        assert not listed["alice"] & listed["bob"], "a user sees another's jobs"
        everyone = {r["id"] for r in json.loads(root.cli("list", "--all", "--json").stdout)}
        assert listed["alice"] | listed["bob"] <= everyone
        proc = as_user(root, "bob", "process", check=False)
        assert proc.returncode == 5 and proc.stderr.startswith("Error: 'miniq --system process' is for root only")
        for path in ("/var/lib/miniq", f"/var/lib/miniq/queue/1000-{alices}.json"):
            assert root.sb.run(["cat", path], user="bob", check=False).returncode != 0
    finally:
        root.resume()
    for job_id, user in ((alices, "alice"), (bobs, "bob")):
        assert as_user(root, user, "wait", job_id, timeout=60).returncode == 0
    proc = as_user(root, "bob", "purge", "--all-finished")
    assert alices not in proc.stdout and root.sb.path(f"/var/lib/miniq/done/{alices}.json").exists()


def plant(root: Flow, owner: str, claimed_uid: int) -> str:
    """A job file in the queue, owned by ``owner``, that claims another submitter."""
    from miniq.core.job import new_id

    job_id = new_id()
    data = {"miniq": 1, "id": job_id, "name": "whoami", "argv": [], "submitted": "2026-11-29T00:00:00+00:00",
            "submitter": {"uid": claimed_uid, "user": "root", "host": "x", "pid": 1}}  # fmt: skip
    # Staged, then renamed in, as every writer must: the processor takes a file the moment it appears.
    staged, path = f"/var/lib/miniq/tmp/plant-{job_id}", f"/var/lib/miniq/queue/1000-{job_id}.json"
    root.sb.run(["install", "-m", "600", "-o", owner, "/dev/stdin", staged], input=json.dumps(data))
    root.sb.run(["mv", staged, path])
    return job_id


def test_a_file_claiming_another_submitter_is_not_believed(root: Flow) -> None:
    alice = root.sb.uid("alice")
    forged, honest = plant(root, "alice", 0), plant(root, "alice", alice)
    root.wait_final([forged, honest], timeout=30)
    forged_result = root.record(forged)["result"]
    assert forged_result["outcome"] == "not-started"
    assert forged_result["reason"] == f"not run: it says it was submitted by uid 0, but its file belongs to uid {alice}"
    assert f"id: uid={alice}(alice)" in root.cli("logs", honest).stdout


@pytest.mark.parametrize(
    "kind,prepare,problem",
    [
        ("owned by a user", "chown alice {job}", "is owned by uid {alice}, not root"),
        ("group-writable", "chmod 775 {job}", "is writable by group"),
        ("a symlink to a user's file", "ln -sf /home/alice/evil.sh {job}", "/home/alice is owned by uid {alice}, not root"),
    ],
)
def test_an_untrusted_job_type_is_not_run(root: Flow, kind: str, prepare: str, problem: str) -> None:
    alice = root.sb.uid("alice")
    job = "/var/lib/miniq/jobs/evil.job"
    evil = "/home/alice/evil.sh"
    root.sb.sh(f"printf '#!/bin/sh\\necho evil $(id -u)\\n' > {evil} && chown alice {evil} && chmod 755 {evil}")
    root.sb.sh(f"printf '#!/bin/sh\\necho evil $(id -u)\\n' > {job} && chmod 755 {job}")
    try:
        job_id = root.cli("enqueue", "--in", "5s", "evil").stdout.strip()  # trusted when queued...
        root.sb.sh(prepare.format(job=job))  # ...not when it is to start: the run gate judges it again
        refused = as_user(root, "alice", "enqueue", "evil", check=False)
        assert refused.returncode == 2 and "job type 'evil' is not trusted" in refused.stderr, refused.stderr
        refused = root.cli("enqueue", "evil", check=False)  # root's own enqueue too: it could never run
        assert refused.returncode == 2 and "job type 'evil' is not trusted" in refused.stderr, refused.stderr
        root.wait_final([job_id], timeout=60)
        result = root.record(job_id)["result"]
        assert result["outcome"] == "not-started", (kind, result)
        assert result["reason"].startswith("job type 'evil' is not trusted, so root will not run it: ")
        assert problem.format(alice=alice) in result["reason"], result["reason"]
        doctor = root.cli("doctor", check=False).stdout
        assert "problem: job type 'evil' is not trusted, so root will not run it: " in doctor
    finally:
        root.sb.run(["rm", "-f", job])


def test_a_per_user_cap(root: Flow) -> None:
    root.sb.sh("printf '[access]\\nmax-queued = 2\\n' > /var/lib/miniq/miniq.conf")
    root.pause()
    try:
        first = [as_user(root, "alice", "enqueue", "whoami").stdout.strip() for _ in range(2)]
        proc = as_user(root, "alice", "enqueue", "whoami", check=False)
        assert proc.returncode == 5
        assert proc.stderr == (
            "Error: you have 2 jobs queued, delayed or running, the most the system queue takes from one user (2); "
            "wait for some to finish\n"
            "Hint: an administrator may allow more with max-queued in [user:alice] or [access] of /var/lib/miniq/miniq.conf\n"
        )
        assert as_user(root, "bob", "enqueue", "whoami").returncode == 0  # a cap per user
    finally:
        root.sb.run(["rm", "/var/lib/miniq/miniq.conf"])
        root.resume()
    root.wait_final(first, timeout=30)


def test_only_a_group_may_submit_when_the_administrator_says_so(root: Flow) -> None:
    root.sb.sh("printf '[access]\\ngroup = lab\\n' > /var/lib/miniq/miniq.conf")
    try:
        proc = as_user(root, "bob", "enqueue", "whoami", check=False)
        assert proc.returncode == 5
        assert proc.stderr.startswith("Error: the system queue takes jobs only from members of group 'lab'")
        job_id = as_user(root, "alice", "enqueue", "whoami").stdout.strip()
        assert as_user(root, "alice", "wait", job_id, timeout=60).returncode == 0
    finally:
        root.sb.run(["rm", "/var/lib/miniq/miniq.conf"])


def test_a_user_reads_their_output_in_the_journal_persistent_and_volatile(root: Flow) -> None:
    alice = root.sb.uid("alice")
    job_id = as_user(root, "alice", "enqueue", "whoami", "persistent").stdout.strip()
    as_user(root, "alice", "wait", job_id, timeout=60)
    own = root.sb.run(["journalctl", "--no-pager", "-o", "cat", f"MINIQ_JOB_ID={job_id}"], user="alice").stdout
    assert f"id: uid={alice}(alice)" in own
    assert root.sb.run(["journalctl", "--no-pager", "-o", "cat", f"MINIQ_JOB_ID={job_id}"], user="bob", check=False).stdout == ""
    # A volatile journal keeps no per-user files: the helper is the way.
    root.sb.sh("mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nStorage=volatile\\n' > /etc/systemd/journald.conf.d/v.conf"
               " && systemctl restart systemd-journald")  # fmt: skip
    try:
        job_id = as_user(root, "alice", "enqueue", "whoami", "volatile").stdout.strip()
        as_user(root, "alice", "wait", job_id, timeout=60)
        deadline = time.monotonic() + 10
        while f"id: uid={alice}(alice)" not in as_user(root, "alice", "logs", job_id).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        direct = root.sb.run(["journalctl", "--no-pager", "-o", "cat", f"MINIQ_JOB_ID={job_id}"], user="alice", check=False)
        assert "uid=" not in direct.stdout
        assert as_user(root, "bob", "logs", job_id, check=False).returncode == 5
    finally:
        root.sb.sh("rm /etc/systemd/journald.conf.d/v.conf && systemctl restart systemd-journald")


FAIL = """#!/bin/sh
exit 4
"""
TELL = """#!/bin/sh
echo "told $(id -un): $1 $MINIQ_FOLLOWS_NAME $MINIQ_FOLLOWS_OUTCOME $MINIQ_FOLLOWS_STATUS"
"""


def test_day_two_in_the_system_queue_is_per_user_and_control_is_roots(root: Flow) -> None:
    root.add_job("fail4", FAIL)
    root.add_job("tell", TELL)
    # Pausing, resuming and schedules would touch every user's jobs: root's alone.
    for args in (("pause",), ("resume",), ("every", "daily", "whoami"), ("stats", "--prometheus", "/tmp/x.prom")):
        out = as_user(root, "alice", *args, check=False)
        assert out.returncode == 5, (args, out.stdout, out.stderr)
        assert out.stderr.startswith("Error: "), out.stderr
    # A follow-up type root would not trust is refused at enqueue, not found out when the job ends.
    root.add_job("loose", "#!/bin/sh\n")
    root.sb.run(["chmod", "0777", f"{root.root}/jobs/loose.job"])
    refused = as_user(root, "alice", "enqueue", "--on-failure", "loose", "whoami", check=False)
    assert refused.returncode == 2 and "Error: job type 'loose' is not trusted" in refused.stderr, refused.stderr
    # Unique keys are per user: alice's key does not hold bob's job, nor tell him her job's id.
    root.pause()
    try:
        first = as_user(root, "alice", "enqueue", "--unique-key", "nightly", "whoami").stdout.strip()
        again = as_user(root, "alice", "enqueue", "--unique-key", "nightly", "whoami", check=False)
        assert again.returncode == 7 and again.stdout.strip() == first
        bobs = as_user(root, "bob", "enqueue", "--unique-key", "nightly", "whoami")
        assert bobs.returncode == 0 and bobs.stdout.strip() != first
        # alice's stats count her jobs only.
        mine = json.loads(as_user(root, "alice", "stats", "--json").stdout)
        assert mine["jobs"]["queued"] == 1, mine
        # A follow-up belongs to the job's owner and runs as them.
        failing = as_user(root, "bob", "enqueue", "--on-failure", "tell", "fail4").stdout.strip()
    finally:
        root.resume()
    assert as_user(root, "bob", "wait", failing, check=False, timeout=60).returncode == 4
    deadline = time.monotonic() + 60
    follow = None
    while follow is None:
        assert time.monotonic() < deadline, "the follow-up never ran"
        rows = json.loads(as_user(root, "bob", "list", "--all", "--json").stdout)
        follow = next((r for r in rows if r["follows"] == failing and r["state"] == "done"), None)
        time.sleep(0.2)
    assert as_user(root, "bob", "logs", follow["id"]).stdout == f"told bob: {failing} fail4 exited 4\n"
    assert as_user(root, "alice", "show", follow["id"], check=False).returncode == 5
