"""The system queue against a hostile local user: alice attacks, bob must still be served.

Each test is one row of what a user without privileges can try on a shared
server (issue: availability, integrity, fairness), done for real in the
sandbox's systemd: alice through her own `miniq --system` or a raw client
(attacker.py), bob as an ordinary user beside her.
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
BUSY_OWN = "Error: you have {n} requests open with the system queue, the most one user may (max-connections = {n}); "
CONF = "/var/lib/miniq/miniq.conf"


@pytest.fixture(scope="module")
def root(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    f = Flow(sandbox, None, "--system")
    f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    for user in ("alice", "bob", "carol"):
        sandbox.add_user(user)
    f.add_job("echo", "#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    f.add_job("nap", '#!/bin/sh\necho "napping $1"\nsleep "$1"\necho "woke up"\n')
    f.add_job("flood", '#!/bin/sh\nseq "$1"\n')
    f.add_job("quick", '#!/bin/sh\necho "$MINIQ_JOB_ID $(id -un)" >> /tmp/order\n')
    f.add_job("length", '#!/bin/sh\nprintf "%s" "$1" | wc -c\n')
    yield f


def attack(root: Flow, user: str, *args: str, input: str | None = None, timeout: float = 120) -> Any:
    proc = root.sb.run(["python3", ATTACKER, *args], user=user, input=input, timeout=timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def as_user(root: Flow, user: str, *args: str, check: bool = True, timeout: float = 120) -> Any:
    return root.sb.run([root.miniq, "--system", *args], user=user, check=check, timeout=timeout)


def served_quickly(root: Flow, user: str = "bob") -> float:
    """bob's list and enqueue work; returns the seconds they took."""
    start = time.monotonic()
    as_user(root, user, "list", timeout=30)
    job_id = as_user(root, user, "enqueue", "echo", "still served", timeout=30).stdout.strip()
    took = time.monotonic() - start
    assert as_user(root, user, "wait", job_id, timeout=60).returncode == 0
    return took


def helper_tasks(root: Flow) -> int:
    return int(root.sb.run(["systemctl", "show", "-P", "TasksCurrent", "miniq-api.service"]).stdout.strip() or 0)


def helper_memory(root: Flow) -> int:
    pid = root.sb.run(["systemctl", "show", "-P", "MainPID", "miniq-api.service"]).stdout.strip()
    status = root.sb.run(["cat", f"/proc/{pid}/status"]).stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def healthy(root: Flow) -> None:
    assert root.unit_state("miniq-api.socket") == "active"
    assert root.failed_units() == []


def test_a_burst_of_requests_never_fails_the_socket(root: Flow) -> None:
    """250 ordinary requests at once (0.2 failed its socket after 200, for good)."""
    result = attack(root, "alice", "burst", "250", "list")
    busy = BUSY_OWN.format(n=16)
    assert set(result["codes"]) <= {"0", "6"}, result
    assert sum(result["codes"].values()) == 250
    assert all(line.startswith(busy) for line in result["errors"]), result
    healthy(root)
    print(f"burst of 250: {result['codes']}; bob served in {served_quickly(root):.2f} s after")


def test_held_connections_are_capped_and_dropped(root: Flow) -> None:
    """256 connections opened 50 a second and held without a request (0.2: every
    other user got 'Broken pipe' while they were held)."""
    holder = root.sb.popen(["python3", ATTACKER, "hold", "256", "30"], user="alice")
    try:
        time.sleep(2)  # about 100 open by now, 16 of them served
        took = served_quickly(root)
        rss, tasks = helper_memory(root), helper_tasks(root)
        out, err = holder.communicate(timeout=60)
    finally:
        holder.kill()
    result = json.loads(out.strip().splitlines()[-1])
    dropped = "2 Error: no whole request arrived within 5 s of connecting"
    refused = f"6 {BUSY_OWN.format(n=16)}"
    answers = result["answers"]
    assert answers.get(dropped) == 16 or sum(v for k, v in answers.items() if k == dropped) >= 16, answers
    assert sum(v for k, v in answers.items() if k.startswith(refused)) + answers[dropped] == 256, answers
    assert result["longest"] < 10, result  # nobody held a connection past the request timeout (plus slack)
    healthy(root)
    print(f"bob served in {took:.2f} s while alice held 16 and knocked 240 times; helper {rss / 2**20:.1f} MiB RSS, {tasks} tasks")


def test_wait_and_follow_hold_a_thread_each_and_end_with_their_client(root: Flow) -> None:
    job_id = as_user(root, "alice", "enqueue", "nap", "60").stdout.strip()
    root.wait_running(job_id)
    before = helper_tasks(root)
    clients = [root.sb.popen([root.miniq, "--system", verb, *extra, job_id], user="alice")
               for verb, extra in (("wait", []), ("wait", []), ("logs", ["-f"]), ("logs", ["-f"]))]  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while helper_tasks(root) < 4 + 2:  # a thread per request, and a journalctl per follow
            assert time.monotonic() < deadline, helper_tasks(root)
            time.sleep(0.2)
        held = helper_tasks(root)
        rss = helper_memory(root)
        # They count in alice's cap: with 4 allowed, a fifth request is refused.
        root.sb.sh(f"printf '[access]\\nmax-connections = 4\\n' > {CONF}")
        proc = as_user(root, "alice", "list", check=False)
        assert (proc.returncode, proc.stderr.startswith(BUSY_OWN.format(n=4))) == (6, True), proc.stderr
        assert as_user(root, "bob", "list").returncode == 0
    finally:
        root.sb.run(["rm", "-f", CONF])
        # Killed inside the sandbox: nsenter on the host only waits for them.
        root.sb.run(["pkill", "-KILL", "-u", "alice", "-f", "miniq --system"], check=False)
        for client in clients:
            client.wait(timeout=30)
    deadline = time.monotonic() + 5
    while helper_tasks(root) > before:
        assert time.monotonic() < deadline, f"the helper still has {helper_tasks(root)} tasks after its clients hung up"
        time.sleep(0.1)
    assert "journalctl" not in root.sb.run(["ps", "-eo", "comm"]).stdout
    root.cli("cancel", job_id)
    print(f"helper: {before} task(s) idle, {held} with 2 waits and 2 follows, {rss / 2**20:.1f} MiB RSS")


def test_forged_journal_entries_never_reach_logs(root: Flow) -> None:
    """alice writes entries claiming to be bob's job's output and its end."""
    job_id = as_user(root, "bob", "enqueue", "nap", "6").stdout.strip()
    root.wait_running(job_id)
    follower = root.sb.popen([root.miniq, "--system", "logs", "-f", "--events", job_id], user="bob")
    time.sleep(1)
    attack(root, "alice", "forge", job_id, "finished", "forged: job done")
    attack(root, "alice", "forge", job_id, "-", "forged: a line of bob's output")
    time.sleep(1)
    assert follower.poll() is None, "a forged finish entry ended bob's logs -f"
    out, _ = follower.communicate(timeout=30)
    assert follower.returncode == 0
    assert "woke up" in out and "forged" not in out, out
    # The entries are in the journal, so it was miniq that left them out.
    everything = root.sb.run(["journalctl", "--no-pager", "-o", "cat", f"MINIQ_JOB_ID={job_id}"]).stdout
    assert "forged: job done" in everything
    for who, proc in (("bob", as_user(root, "bob", "logs", "--events", job_id)), ("root", root.cli("logs", "--events", job_id))):
        assert "forged" not in proc.stdout and "woke up" in proc.stdout, (who, proc.stdout)


def test_one_users_flood_costs_another_no_line(root: Flow) -> None:
    """alice's job writes 30,000 lines, then bob's 3,000 (0.2: bob lost 2,983)."""
    root.pause()
    try:
        alices = as_user(root, "alice", "enqueue", "flood", "30000").stdout.strip()
        bobs = as_user(root, "bob", "enqueue", "flood", "3000").stdout.strip()
    finally:
        root.resume()
    root.wait_final([alices, bobs], timeout=120)
    lines = as_user(root, "bob", "logs", bobs).stdout.splitlines()
    assert lines == [str(i) for i in range(1, 3001)]
    assert root.record(bobs)["result"].get("output_dropped") is None
    dropped = root.record(alices)["result"]["output_dropped"]
    assert 10_000 <= dropped < 20_000, dropped  # her own budget (10000 per 30 s) cut her short
    print(f"alice's flood: {dropped} of 30000 lines dropped; bob's 3000 all kept")


def test_a_users_one_job_waits_behind_at_most_a_couple_of_anothers_thousand(root: Flow) -> None:
    root.sb.run(["install", "-m", "666", "/dev/null", "/tmp/order"])
    root.pause()
    alice = root.sb.uid("alice")
    script = (
        "import sys; from pathlib import Path; from miniq import Queue\n"
        "q = Queue(Path('/var/lib/miniq'))\n"
        f"for i in range(1000): q.enqueue('quick', [str(i)], owner=({alice}, {alice}))\n"
    )
    try:
        root.sb.run(["/opt/miniq/venv/bin/python", "-c", script], timeout=300)
        bobs = as_user(root, "bob", "enqueue", "quick").stdout.strip()
    finally:
        root.resume()
    root.wait_final([bobs], timeout=120)
    root.pause()
    try:
        order = root.sb.run(["cat", "/tmp/order"]).stdout.split("\n")
        position = next(i for i, line in enumerate(order) if line.startswith(bobs))
        assert order[position].endswith(" bob")
        assert position <= 2, order[: position + 1]
        root.sb.sh("rm -f /var/lib/miniq/queue/*")
    finally:
        root.resume()
    print(f"bob's job ran after {position} of alice's 1000")


def test_priorities_above_the_default_are_roots_or_granted(root: Flow) -> None:
    proc = as_user(root, "alice", "enqueue", "--priority", "1000", "echo", check=False)
    assert proc.returncode == 5
    assert proc.stderr.splitlines()[0] == "Error: priority 1000 is above the highest you may give in the system queue (0)"
    assert as_user(root, "alice", "enqueue", "--priority", "-5", "echo").returncode == 0
    root.sb.sh(f"printf '[user:alice]\\nmax-priority = 10\\n' > {CONF}")
    try:
        assert as_user(root, "alice", "enqueue", "--priority", "10", "echo").returncode == 0
        assert as_user(root, "alice", "enqueue", "--priority", "11", "echo", check=False).returncode == 5
        assert as_user(root, "bob", "enqueue", "--priority", "1", "echo", check=False).returncode == 5
    finally:
        root.sb.run(["rm", "-f", CONF])
    assert root.cli("enqueue", "--priority", "1000", "echo").returncode == 0


@pytest.mark.parametrize(
    "name,data,code,error",
    [
        ("deeply nested JSON", '{"argv": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 2, "Error: malformed request: "),
        ("not JSON", "\x00\xff garbage\n", 2, "Error: malformed request: "),
        ("no argv", '{"args": ["list"]}\n', 2, "Error: malformed request: expected a JSON object with an argv list of strings"),
        ("argv of numbers", '{"argv": [1, 2]}\n', 2, "Error: malformed request: expected a JSON object with an argv list of strings"),
        ("a root command", '{"argv": ["process"]}\n', 5, "Error: 'miniq --system process' is for root only"),
        ("an option before the command", '{"argv": ["--root", "/etc", "list"]}\n', 5, "Error: 'miniq --system --root' is for root only"),
        ("three MiB", '{"argv": ["list", "' + "x" * 3 * 2**20 + '"]}\n', 2, "Error: request larger than 2097152 bytes"),
        ("an unfinished request", '{"argv": ["li', 2, "Error: no whole request arrived within 5 s of connecting"),
    ],
)
def test_a_bad_request_gets_one_error_line_and_breaks_nothing(root: Flow, name: str, data: str, code: int, error: str) -> None:
    result = attack(root, "alice", "raw", input=data)
    assert result["code"] == code, (name, result)
    assert result["err"].startswith(error) and result["err"].count("\n") == 1, (name, result["err"])
    healthy(root)
    assert root.unit_state("miniq-api.service") in ("active", "inactive")
    served_quickly(root)


def test_arguments_no_program_can_receive_are_refused_at_enqueue(root: Flow) -> None:
    """A raw request carries what the shell could not: one argument of 1,040,000 bytes."""
    before = root.sb.run(["ls", "/var/lib/miniq/queue"]).stdout
    big = json.dumps({"argv": ["enqueue", "echo", "x" * 1_040_000]}) + "\n"
    result = attack(root, "alice", "raw", input=big)
    assert result["code"] == 2
    assert result["err"] == (
        "Error: argument 1 is 1040000 bytes: the kernel passes at most 131071 bytes in one argument, "
        "so the job could never start; pass large data in a file\n"
    )
    assert root.sb.run(["ls", "/var/lib/miniq/queue"]).stdout == before
    # The longest argument miniq takes is one the job really receives.
    longest = attack(root, "alice", "raw", input=json.dumps({"argv": ["enqueue", "length", "y" * 131_071]}) + "\n")
    job_id = longest["out"].strip()
    assert as_user(root, "alice", "wait", job_id, timeout=60).returncode == 0
    assert as_user(root, "alice", "logs", job_id).stdout.strip() == "131071"


def test_what_other_users_see_of_a_running_job(root: Flow) -> None:
    """README says it: another user sees a running job's command line through
    /proc unless /proc hides it (hidepid), and doctor says which it is; and
    through systemctl status of its scope whatever /proc does (systemd lists
    any unit's processes to anyone)."""
    job_id = as_user(root, "bob", "enqueue", "nap", "30", "b0b-s3cr3t-arg").stdout.strip()
    root.wait_running(job_id)
    try:
        assert "b0b-s3cr3t-arg" in root.sb.run(["ps", "-eo", "args"], user="alice").stdout
        doctor = root.cli("doctor", check=False).stdout
        assert "problem: /proc shows every process to every user, so users of the system queue can read each other's" in doctor
        root.sb.run(["mount", "-o", "remount,hidepid=invisible", "/proc"])
        try:
            assert "b0b-s3cr3t-arg" not in root.sb.run(["ps", "-eo", "args"], user="alice").stdout
            assert "b0b-s3cr3t-arg" in root.sb.run(["ps", "-eo", "args"], user="bob").stdout
            assert "ok: /proc hides each user's processes from the others (hidepid)" in root.cli("doctor", check=False).stdout
            # What stays visible: systemd answers GetUnitProcesses to anyone, from its own view of /proc.
            status = root.sb.run(["systemctl", "status", "--no-pager", f"miniq-job-{job_id}.scope"], user="alice", check=False).stdout
            assert f"miniq job {job_id} (nap)" in status and "nap.job 30 b0b-s3cr3t-arg" in status, status
        finally:
            root.sb.run(["mount", "-o", "remount,hidepid=off", "/proc"])
    finally:
        root.cli("cancel", job_id)


def test_doctor_and_the_client_name_a_failed_socket_and_its_fix(root: Flow) -> None:
    dropin = "/run/systemd/system/miniq-api.socket.d"
    root.sb.sh(f"mkdir -p {dropin} && printf '[Socket]\\nListenStream=\\nListenStream=/proc/nowhere/api.socket\\n' > {dropin}/x.conf"
               " && systemctl daemon-reload && (systemctl restart miniq-api.socket || true)")  # fmt: skip
    try:
        state = root.unit_state("miniq-api.socket")
        assert state == "failed", root.sb.sh("systemctl status --no-pager miniq-api.socket; journalctl -n 30", check=False).stdout
        doctor = root.cli("doctor", check=False).stdout.splitlines()
        line = next(i for i, text in enumerate(doctor) if text.startswith("problem: miniq-api.socket has failed"))
        assert doctor[line] == (
            "problem: miniq-api.socket has failed: systemd could not create the socket (see the journal) (result: resources)"
        )
        assert doctor[line + 1] == (
            "  fix: systemctl reset-failed miniq-api.socket && systemctl start miniq-api.socket; see: journalctl -u miniq-api"
        )
        proc = as_user(root, "bob", "list", check=False)
        assert proc.returncode == 4
        assert proc.stderr.splitlines()[1] == (
            "Hint: miniq-api.socket has failed (resources); an administrator restarts it with: "
            "systemctl reset-failed miniq-api.socket && systemctl start miniq-api.socket"
        )
    finally:
        root.sb.sh(f"rm -r {dropin} && systemctl daemon-reload && systemctl reset-failed miniq-api.socket; "
                   "systemctl restart miniq-api.socket")  # fmt: skip
    healthy(root)
    served_quickly(root)


def test_three_users_with_a_thousand_requests_at_once(root: Flow) -> None:
    """Answered or refused with the documented error, none lost, the socket still serving."""
    bursts = {user: root.sb.popen(["python3", ATTACKER, "burst", "334" if user != "carol" else "332", "list"], user=user)
              for user in ("alice", "bob", "carol")}  # fmt: skip
    outcome = {}
    for user, proc in bursts.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outcome[user] = json.loads(out.strip().splitlines()[-1])
    total = sum(sum(r["codes"].values()) for r in outcome.values())
    assert total == 1000
    for user, result in outcome.items():
        assert set(result["codes"]) <= {"0", "6"}, (user, result)
        assert all(e.startswith(BUSY_OWN.format(n=16)) for e in result["errors"]), (user, result)
        assert result["codes"].get("0", 0) >= 16, (user, result)  # every user got served
    healthy(root)
    print("1000 requests from 3 users: " + "; ".join(f"{u} {r['codes']}" for u, r in outcome.items()))


def test_a_wait_outlives_a_restart_of_the_helper_and_its_socket(root: Flow) -> None:
    """What a package upgrade does: the socket restarts, and the helper with it
    (systemd refuses to start a socket whose service still runs)."""
    job_id = as_user(root, "bob", "enqueue", "nap", "6").stdout.strip()
    root.wait_running(job_id)
    waiter = root.sb.popen([root.miniq, "--system", "wait", job_id], user="bob")
    time.sleep(1.5)
    assert root.unit_state("miniq-api.service") == "active"
    root.sb.run(["systemctl", "restart", "miniq-api.socket"])
    healthy(root)
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert as_user(root, "bob", "list").returncode == 0
