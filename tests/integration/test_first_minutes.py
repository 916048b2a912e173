"""The first five minutes and the operator's day: no silent dead ends.

Each test is one dead end a person met following README, now with a clear
word and the fix: a volatile journal, a queue nothing processes, a user
manager that is not there, removing the units while jobs run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def alice(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    sandbox.add_user("alice")
    f = Flow(sandbox, "alice", "--user")
    out = f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    f.sb.install_output = out  # type: ignore[attr-defined]
    f.add_job("hello", "#!/bin/sh\necho hello from $(id -un)\n")
    yield f


def test_install_says_what_it_does_and_what_comes_next(alice: Flow) -> None:
    out = alice.sb.install_output  # type: ignore[attr-defined]
    steps = [line for line in out.splitlines() if line.startswith("==> ")]
    assert [s.split(" (")[0] for s in steps] == [
        "==> checking the Debian packages miniq needs to build",
        "==> creating /home/alice/.local/share/miniq/venv",
        "==> installing miniq, click and pystemd into it",
        "==> installing and starting the units",
    ]
    assert '  export PATH="/home/alice/.local/bin:$PATH"      # miniq is in /home/alice/.local/bin' in out
    assert '  id=$(miniq enqueue notify Title "This is a message!" 9)' in out


def test_logs_on_a_volatile_journal_say_why_they_are_missing(alice: Flow) -> None:
    alice.sb.sh("mkdir -p /etc/systemd/journald.conf.d && printf '[Journal]\\nStorage=volatile\\n' > /etc/systemd/journald.conf.d/v.conf"
                " && systemctl restart systemd-journald")  # fmt: skip
    try:
        job_id = alice.cli("enqueue", "hello").stdout.strip()
        alice.wait_final([job_id], timeout=30)
        proc = alice.cli("logs", job_id, check=False)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith(f"Error: cannot show the output of job {job_id}: the journal on this host is volatile")
        assert "mkdir -p /var/log/journal && systemctl restart systemd-journald" in proc.stderr
        doctor = alice.cli("doctor", check=False).stdout
        assert "problem: you cannot read your jobs' output: the journal on this host is volatile" in doctor
        assert alice.record(job_id)["result"]["output_lines"] == 1  # it did print: not "printed nothing"
    finally:
        alice.sb.sh("rm /etc/systemd/journald.conf.d/v.conf && systemctl restart systemd-journald")
    job_id = alice.cli("enqueue", "hello").stdout.strip()
    alice.wait_final([job_id], timeout=30)
    assert alice.cli("logs", job_id).stdout == "hello from alice\n"


def test_enqueue_into_a_queue_nothing_processes_warns(alice: Flow) -> None:
    root = alice.sb
    root.sh("mkdir -p /root/.local/state/miniq/jobs && printf '#!/bin/sh\\n' > /root/.local/state/miniq/jobs/x.job"
            " && chmod +x /root/.local/state/miniq/jobs/x.job")  # fmt: skip
    miniq = "/home/alice/.local/share/miniq/venv/bin/miniq"
    proc = root.run([miniq, "--user", "enqueue", "x"])
    assert len(proc.stdout.strip()) == 31
    assert proc.stderr.startswith("Warning: no miniq-process.path or .timer is enabled in the user manager, so nothing will run this job")
    assert "fix: miniq --user install-units --now" in proc.stderr


def test_doctor_without_a_user_manager_is_one_line_per_problem(alice: Flow) -> None:
    proc = alice.sb.run(["/home/alice/.local/share/miniq/venv/bin/miniq", "--user", "doctor"], env={"XDG_RUNTIME_DIR": "/run/user/0"},
                        check=False)  # fmt: skip
    assert proc.returncode == 1
    assert "problem: systemd cannot be reached: cannot reach your user manager" in proc.stdout
    for internal in ("DBusBaseError", "i bet you", "Traceback", "pystemd"):
        assert internal not in proc.stdout + proc.stderr, proc.stdout


def test_uninstall_units_refuses_while_jobs_run(alice: Flow) -> None:
    alice.add_job("long", "#!/bin/sh\nexec sleep 300\n")
    job_id = alice.cli("enqueue", "long").stdout.strip()
    alice.wait_running(job_id)
    proc = alice.cli("uninstall-units", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"Error: 1 job(s) are running (e.g. {job_id}); removing the units would stop them")
    assert alice.unit_state("miniq-process.path") == "active"
    assert "removed" in alice.cli("uninstall-units", "--force").stdout
    record = alice.record(job_id)
    assert record["state"] in ("delayed", "queued"), record
    assert record["attempts"][0]["outcome"] == "interrupted" and record["attempts"][0]["reason"] == "its processor was stopped"
    alice.cli("install-units", "--now")
    alice.cli("cancel", job_id)
