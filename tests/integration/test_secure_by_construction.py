"""Secure by construction: alice (no privileges) against bob and root, on a real systemd.

One test per way the system queue's rules were found broken (issue 32),
each through the path that skipped a check: a niceness set while still
root, retry passing none of enqueue's checks, a removed group member's
retries, times out of range, values that reached "internal error", a user's
control characters on root's terminal, another user's slots in a user's
stats, defaults that were never caps, a helper restarting without end, a
link in a directory above a job type, and README's follow-up example.
The unit tests prove the same rules door by door (tests/test_policy.py), the
face (tests/test_face.py) and the fuzzing of every input (tests/test_fuzz.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

pytestmark = pytest.mark.systemd

ATTACKER = str(Path(__file__).resolve().parent / "attacker.py")
CONF = "/etc/miniq/miniq.conf"  # the system queue's (layout.py); the helper's tests use its place before 0.3


@pytest.fixture(scope="module")
def root(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    f = Flow(sandbox, None, "--system")
    f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    for user in ("alice", "bob"):
        sandbox.add_user(user)
    f.add_job("echo", "#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    f.add_job("nap", '#!/bin/sh\necho "napping $1"\nsleep "$1"\n')
    f.add_job("fail", "#!/bin/sh\nexit 1\n")
    f.add_job("probe", "#!/bin/sh\necho \"nice=$(cut -d' ' -f19 /proc/self/stat) uid=$(id -u)\"\n")
    yield f


def as_user(root: Flow, user: str, *args: str, check: bool = True, timeout: float = 120) -> Any:
    return root.sb.run([root.miniq, "--system", *args], user=user, check=check, timeout=timeout)


def conf(root: Flow, text: str) -> None:
    root.sb.sh(f"mkdir -p /etc/miniq && cat > {CONF}", input=text)


def no_conf(root: Flow) -> None:
    root.sb.run(["rm", "-f", CONF])


def refused(proc: Any, code: int, error: str) -> None:
    """One ``Error:`` line (maybe a ``Hint:``), the documented code, never "internal error"."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert lines and lines[0].startswith("Error: " + error), proc.stderr
    assert len(lines) <= 2 and all(line.startswith("Hint: ") for line in lines[1:]), proc.stderr
    assert "internal error" not in proc.stderr


def queued_files(root: Flow) -> str:
    return str(root.sb.sh("ls /var/lib/miniq/queue /var/lib/miniq/delayed").stdout)


def test_a_niceness_below_zero_is_roots_or_granted_and_set_only_as_granted(root: Flow) -> None:
    refused(as_user(root, "alice", "enqueue", "--nice", "-20", "probe", check=False), 5,
            "--nice -20 is over what the system queue gives your jobs: the lowest is 0")  # fmt: skip
    conf(root, "[user:alice]\ncap-nice = -5\n")
    try:
        granted = as_user(root, "alice", "enqueue", "--nice", "-5", "probe").stdout.strip()
        refused(as_user(root, "alice", "enqueue", "--nice", "-6", "probe", check=False), 5, "--nice -6 is over")
        assert as_user(root, "alice", "wait", granted, timeout=60).returncode == 0
        alice = root.sb.uid("alice")
        assert as_user(root, "alice", "logs", granted).stdout.strip() == f"nice=-5 uid={alice}"
        # Granted when queued, withdrawn before it starts: the run gate gives 0.
        conf(root, "[user:alice]\ncap-nice = -20\n")
        root.pause()
        try:
            withdrawn = as_user(root, "alice", "enqueue", "--nice", "-20", "probe").stdout.strip()
            no_conf(root)
        finally:
            root.resume()
        assert as_user(root, "alice", "wait", withdrawn, timeout=60).returncode == 0
        assert as_user(root, "alice", "logs", withdrawn).stdout.strip() == f"nice=0 uid={alice}"
        assert root.record(withdrawn)["result"]["limits"] == {"nice": 0}  # what it was given
    finally:
        no_conf(root)
    assert root.cli("enqueue", "--nice", "-20", "probe").returncode == 0  # root's own


def test_retry_passes_the_gate_enqueue_does(root: Flow) -> None:
    root.pause()
    try:
        cancelled = [as_user(root, "alice", "enqueue", "echo", str(i)).stdout.strip() for i in range(3)]
        for job_id in cancelled:
            as_user(root, "alice", "cancel", job_id)
        conf(root, "[access]\nmax-queued = 2\n")
        held = [as_user(root, "alice", "enqueue", "echo", "held").stdout.strip() for _ in range(2)]
        before = queued_files(root)
        proc = as_user(root, "alice", "retry", *cancelled, check=False)
        refused(proc, 5, "you have 2 jobs queued, delayed or running, the most the system queue takes from one user (2)")
        assert proc.stdout == "" and queued_files(root) == before
        assert all(root.record(j)["state"] == "failed" for j in cancelled)
    finally:
        no_conf(root)
        root.resume()
    root.wait_final(held, timeout=60)


def test_a_user_removed_from_the_access_group_has_no_job_queued_or_started(root: Flow) -> None:
    root.sb.run(["groupadd", "-f", "lab"])
    root.sb.run(["usermod", "-aG", "lab", "alice"])
    conf(root, "[access]\ngroup = lab\n")
    try:
        failed = as_user(root, "alice", "enqueue", "fail").stdout.strip()
        root.wait_final([failed], timeout=60)
        delayed = as_user(root, "alice", "enqueue", "--in", "4s", "echo", "later").stdout.strip()
        root.sb.run(["gpasswd", "-d", "alice", "lab"])
        refused(as_user(root, "alice", "retry", failed, check=False), 5, "the system queue takes jobs only from members of group 'lab'")
        refused(as_user(root, "alice", "enqueue", "echo", check=False), 5, "the system queue takes jobs only from members of group 'lab'")
        root.wait_final([delayed], timeout=60)
        result = root.record(delayed)["result"]
        assert result["outcome"] == "not-started"
        assert result["reason"].startswith("not run: its owner alice may no longer use the system queue: "), result["reason"]
    finally:
        no_conf(root)


@pytest.mark.parametrize(
    "args,error",
    [
        (["--in", "1000000d"], "invalid duration '1000000d': at most 10 years"),
        (["--at", "9999-12-31T23:59:59"], "invalid time '9999-12-31T23:59:59' for --at: expected a time from 1970 to 10 years from now"),
        (["--in", "1" * 401], "invalid duration '" + "1" * 64 + "...': expected e.g. 90s"),
        (["--in", "100000000d"], "invalid duration '100000000d': at most 10 years"),
        (["--at", "0001-01-01T00:00"], "invalid time '0001-01-01T00:00' for --at: expected"),
        (["--timeout", "3651d"], "invalid duration '3651d': at most 10 years"),
        (["--memory-max", "²"], "invalid size '²'"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_times_and_values_out_of_range_are_bad_input_and_write_nothing(root: Flow, args: list[str], error: str) -> None:
    before = queued_files(root)
    refused(as_user(root, "alice", "enqueue", *args, "echo", check=False), 2, error)
    assert queued_files(root) == before


def test_a_request_no_command_line_could_make_is_bad_input(root: Flow) -> None:
    for argv in (["enqueue", "echo", "\ud800"], ["enqueue", "--unique-key", "\ud800", "echo"], ["enqueue", "echo", "a\x00b"]):
        request = json.dumps({"argv": argv}) + "\n"
        proc = root.sb.run(["python3", ATTACKER, "raw"], user="alice", input=request)
        answer = json.loads(proc.stdout.strip().splitlines()[-1])
        assert answer["code"] == 2, answer
        assert answer["err"].startswith("Error: malformed request: an argument holds a "), answer
        assert "internal error" not in answer["err"]


def test_a_users_control_characters_never_reach_roots_terminal(root: Flow) -> None:
    hostile = "x\rOVERWRITTEN\x1b[2K\x1b[1A\x1b]0;title\x07"
    root.pause()
    try:
        bobs = as_user(root, "bob", "enqueue", "echo", "bob's row").stdout.strip()
        alices = as_user(root, "alice", "enqueue", "echo", hostile).stdout.strip()
        # As a person sees it: root's miniq on a terminal (script(1) gives it a pty).
        screen = root.sb.run(["script", "-qec", f"stty cols 250; {root.miniq} --system list", "/dev/null"]).stdout
        piped = root.cli("list").stdout
        shown = root.cli("show", alices).stdout
    finally:
        root.sb.sh("rm -f /var/lib/miniq/queue/*")
        root.resume()
    for output in (screen.replace("\r\n", "\n"), piped, shown):
        assert "\x1b" not in output and "\r" not in output and "\x07" not in output, output
        assert "\\x1b[2K" in output and "\\r" in output
    assert bobs in screen and "s row'" in screen, screen  # shlex quoting: 'bob'"'"'s row'
    assert next(line for line in piped.splitlines() if alices in line).count("\n") == 0


def test_a_users_stats_count_only_their_own_jobs(root: Flow) -> None:
    conf(root, "[job:nap]\nparallel = 2\n")
    try:
        bobs = as_user(root, "bob", "enqueue", "nap", "20").stdout.strip()
        deadline = time.monotonic() + 30  # claimed, then its slot taken: wait for the slot
        while json.loads(root.cli("stats", "--json").stdout)["slots"].get("nap", {}).get("used") != 1:
            assert time.monotonic() < deadline, root.cli("stats", "--json").stdout
            time.sleep(0.1)
        alices = json.loads(as_user(root, "alice", "stats", "--json").stdout)
        assert alices["slots"]["nap"] == {"used": 0, "count": 2}, alices["slots"]
        assert alices["running_by_host"] == {} and alices["jobs"]["running"] == 0
        assert "slots of nap: 0 of 2 in use" in as_user(root, "alice", "stats").stdout
        assert json.loads(as_user(root, "bob", "stats", "--json").stdout)["slots"]["nap"] == {"used": 1, "count": 2}
        assert json.loads(root.cli("stats", "--json").stdout)["slots"]["nap"] == {"used": 1, "count": 2}
        root.cli("cancel", bobs)
    finally:
        no_conf(root)


def test_caps_bound_what_a_users_job_may_ask_for_and_is_given(root: Flow) -> None:
    conf(root, "[user:alice]\nmemory-max = 32M\ncap-memory-max = 64M\ncap-timeout = 1m\ncap-cpu-quota = 100%\n")
    try:
        before = queued_files(root)
        for args, error in (
            (["--memory-max", "1T"], "--memory-max 1T is over what the system queue gives your jobs: the most is 64M"),
            (["--timeout", "3650d"], "--timeout 3650d is over what the system queue gives your jobs: the most is 1m"),
            (["--cpu-quota", "100000%"], "--cpu-quota 100000% is over what the system queue gives your jobs: the most is 100%"),
        ):
            refused(as_user(root, "alice", "enqueue", *args, "nap", "1", check=False), 5, error)
        assert queued_files(root) == before
        # Nothing asked: the defaults, held to the caps; systemd enforces what the scope says.
        job_id = as_user(root, "alice", "enqueue", "nap", "20").stdout.strip()
        scope = f"miniq-job-{job_id}.scope"
        deadline = time.monotonic() + 30  # claimed, then its scope started: wait for the scope
        while root.sb.run(["systemctl", "show", "-P", "ActiveState", scope]).stdout.strip() != "active":
            assert time.monotonic() < deadline, root.record(job_id)
            time.sleep(0.1)
        props = root.sb.run(["systemctl", "show", "-P", "MemoryMax", scope]).stdout.strip()
        runtime = root.sb.run(["systemctl", "show", "-P", "RuntimeMaxUSec", scope]).stdout.strip()
        assert (props, runtime) == (str(32 * 2**20), "1min 40s"), (props, runtime)  # 1m, its stop timeout 10 s, systemd's backstop 30 s
        bobs = as_user(root, "bob", "enqueue", "--memory-max", "1T", "echo").stdout.strip()  # caps are alice's
        root.cli("cancel", job_id)
        assert root.record(job_id)["result"]["limits"] == {"memory_max": 32 * 2**20, "timeout": 60.0, "cpu_quota": 100}
        root.wait_final([bobs], timeout=60)
    finally:
        no_conf(root)


def test_a_helper_that_cannot_start_fails_loudly_and_boundedly(root: Flow) -> None:
    dropin = "/run/systemd/system/miniq-api.service.d"
    root.sb.sh(f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart=/nonexistent/miniq serve\\n' > {dropin}/x.conf"
               " && systemctl daemon-reload && systemctl stop miniq-api.service && systemctl restart miniq-api.socket")  # fmt: skip
    try:
        start = time.monotonic()
        proc = as_user(root, "alice", "list", check=False, timeout=120)
        took = time.monotonic() - start
        assert proc.returncode == 4 and took < 60, (took, proc.stderr)
        assert proc.stderr.startswith("Error: "), proc.stderr
        assert "internal error" not in proc.stderr
        # systemd gives up within its start limit: no restart without end.
        deadline = time.monotonic() + 60
        while root.unit_state("miniq-api.service") != "failed":
            assert time.monotonic() < deadline, root.sb.run(["systemctl", "status", "--no-pager", "miniq-api.service"], check=False).stdout
            time.sleep(0.5)
        restarts = int(root.sb.run(["systemctl", "show", "-P", "NRestarts", "miniq-api.service"]).stdout.strip())
        time.sleep(3)
        assert int(root.sb.run(["systemctl", "show", "-P", "NRestarts", "miniq-api.service"]).stdout.strip()) == restarts <= 10
        again = as_user(root, "alice", "list", check=False, timeout=120)
        assert again.returncode == 4 and again.stderr.splitlines()[1].startswith("Hint: "), again.stderr
        doctor = root.cli("doctor", check=False).stdout
        assert ("problem: miniq-api.socket has failed: its helper, miniq-api.service, failed to start too often" in doctor
                or "problem: miniq-api.socket is active, but the system queue's helper did not answer" in doctor), doctor  # fmt: skip
        print(f"alice's list ended after {took:.1f} s: {proc.stderr.splitlines()[0]}; the helper failed after {restarts} restarts")
    finally:
        root.sb.sh(f"rm -r {dropin} && systemctl daemon-reload && systemctl reset-failed miniq-api.service miniq-api.socket; "
                   "systemctl restart miniq-api.socket")  # fmt: skip
    assert as_user(root, "alice", "list").returncode == 0
    assert "ok: the system queue's helper answers (miniq " in root.cli("doctor", check=False).stdout


def test_a_link_in_a_directory_above_a_job_type_is_judged(root: Flow) -> None:
    """jobs -> userdir (alice's), holding a root-owned x.job: alice could replace it."""
    lib = "/var/lib/miniq"
    alice = root.sb.uid("alice")
    root.sb.sh(f"mv {lib}/jobs {lib}/jobs.real && mkdir -m 755 {lib}/userdir && chown alice {lib}/userdir"
               f" && printf '#!/bin/sh\\necho x\\n' > {lib}/userdir/x.job && chmod 755 {lib}/userdir/x.job"
               f" && ln -s userdir {lib}/jobs")  # fmt: skip
    try:
        refused(as_user(root, "alice", "enqueue", "x", check=False), 2,
                f"job type 'x' is not trusted, so root will not run it: {lib}/userdir is owned by uid {alice}, not root")  # fmt: skip
        refused(root.cli("enqueue", "x", check=False), 2, "job type 'x' is not trusted")
        doctor = root.cli("doctor", check=False).stdout
        assert f"problem: job type 'x' is not trusted, so root will not run it: {lib}/userdir is owned by uid {alice}" in doctor
    finally:
        root.sb.sh(f"rm {lib}/jobs && rm -r {lib}/userdir && mv {lib}/jobs.real {lib}/jobs")


def test_the_readme_follow_up_example_works_in_the_system_queue(root: Flow) -> None:
    root.add_job("notify", '#!/bin/sh\nminiq show "$MINIQ_FOLLOWS_ID"\n')
    failed = as_user(root, "alice", "enqueue", "--on-failure", "notify", "fail").stdout.strip()
    root.wait_final([failed], timeout=60)
    rows = json.loads(as_user(root, "alice", "list", "--all", "--json").stdout)
    follow = next(r["id"] for r in rows if r["follows"] == failed)
    assert as_user(root, "alice", "wait", follow, timeout=60).returncode == 0, root.record(follow)
    shown = as_user(root, "alice", "logs", follow).stdout
    assert f"id:          {failed}" in shown and "state:       failed" in shown, shown
