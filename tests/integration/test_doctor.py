"""`miniq doctor` finds each problem it knows, in the sandbox (a non-root user
with a README install)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

pytestmark = pytest.mark.systemd


@pytest.fixture(scope="module")
def flow(sandbox: Sandbox, repo: str) -> Iterator[Flow]:
    sandbox.add_user("alice")
    f = Flow(sandbox, "alice", "--user")
    f.install(repo, str(sandbox.wheelhouse))  # type: ignore[attr-defined]
    f.add_job("ok", "#!/bin/sh\necho ok\n")
    yield f


def doctor(flow: Flow, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    proc = flow.run([flow.miniq, *args, "doctor"], check=False, env=env)
    return proc.returncode, proc.stdout.splitlines()


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith(("problem:", "  fix:"))]


def test_healthy(flow: Flow) -> None:
    code, lines = doctor(flow)
    assert code == 0, lines
    assert "ok: miniq-process.path is enabled and active" in lines
    assert "ok: 1 job type(s), all usable" in lines
    assert "ok: you can read your jobs' output in the journal" in lines


def test_job_type_not_executable(flow: Flow) -> None:
    flow.add_job("plain", "#!/bin/sh\n")
    flow.sh(f"chmod -x {flow.root}/jobs/plain.job")
    try:
        code, lines = doctor(flow)
    finally:
        flow.sh(f"rm {flow.root}/jobs/plain.job")
    assert code == 1
    assert problems(lines) == [
        f"problem: job type 'plain' is not executable: expected an executable at {flow.root}/jobs/plain.job (chmod +x it)",
        f"  fix: chmod +x {flow.root}/jobs/plain.job",
    ]  # the worker's and enqueue's own words (jobtypes.py)


def test_unit_not_enabled(flow: Flow) -> None:
    flow.run(["systemctl", "--user", "disable", "miniq-process.timer"])
    try:
        code, lines = doctor(flow)
    finally:
        flow.run(["systemctl", "--user", "enable", "miniq-process.timer"])
    assert code == 1
    assert problems(lines) == [
        "problem: miniq-process.timer is not enabled, so it will not run after a reboot",
        "  fix: systemctl --user enable --now miniq-process.timer miniq-process.path",
    ]


def test_path_unit_failed_on_its_trigger_limit(flow: Flow) -> None:
    # A processor that exits at once without draining: the path unit keeps
    # firing on the non-empty queue until systemd fails it.
    flow.sh(
        "mkdir -p ~/.config/systemd/user/miniq-process.service.d && printf '[Service]\\nExecStart=\\nExecStart=/bin/true\\n'"
        " > ~/.config/systemd/user/miniq-process.service.d/broken.conf && systemctl --user daemon-reload"
        # A processor still lingering from an earlier test would take the job and drain the queue.
        " && systemctl --user stop miniq-process.service"
    )
    job_id = None
    try:
        job_id = flow.cli("enqueue", "ok").stdout.strip()
        for _ in range(100):
            if flow.unit_state("miniq-process.path") == "failed":
                break
            time.sleep(0.1)
        code, lines = doctor(flow)
    finally:
        flow.sh("rm -r ~/.config/systemd/user/miniq-process.service.d && systemctl --user daemon-reload")
        flow.run(["systemctl", "--user", "reset-failed", "miniq-process.path"])
        flow.run(["systemctl", "--user", "start", "miniq-process.path"])
        if job_id:  # the mended processor runs it: the next test finds no running job
            flow.wait_final([job_id], timeout=60)
    assert code == 1
    assert problems(lines)[0] == (
        "problem: miniq-process.path has failed: it hit its trigger limit, because the queue stayed non-empty "
        "while the processor kept stopping (result: trigger-limit-hit)"
    )


def test_units_missing(flow: Flow) -> None:
    flow.cli("uninstall-units")
    try:
        code, lines = doctor(flow)
    finally:
        flow.cli("install-units", "--now")
    assert code == 1
    assert problems(lines) == [
        "problem: units not installed: miniq-process.service, miniq-process.path, miniq-process.timer",
        "  fix: miniq --user install-units --now",
    ]


def test_root_missing_and_not_watched(flow: Flow) -> None:
    code, lines = doctor(flow, "--root", "/home/alice/elsewhere")
    assert code == 1
    assert problems(lines) == [
        f"problem: miniq-process.path watches {flow.root}/queue, but this queue is /home/alice/elsewhere/queue",
        "  fix: miniq --user --root /home/alice/elsewhere install-units --now",
        "problem: the queue root /home/alice/elsewhere does not exist",
        "  fix: mkdir -p /home/alice/elsewhere/jobs and put job types there (executables named NAME.job)",
    ]


def test_root_not_writable(flow: Flow) -> None:
    flow.sh(f"chmod a-w {flow.root}/queue")
    try:
        code, lines = doctor(flow)
    finally:
        flow.sh(f"chmod u+w {flow.root}/queue")
    assert code == 1
    assert problems(lines) == [
        f"problem: the queue is not writable here: {flow.root}/queue",
        f"  fix: chown -R {flow.sb.uid('alice')} {flow.root} (or run miniq as its owner)",
    ]


def test_systemd_unreachable(flow: Flow) -> None:
    code, lines = doctor(flow, env={"XDG_RUNTIME_DIR": "/nonexistent"})
    assert code == 1
    assert problems(lines)[0].startswith("problem: systemd cannot be reached: cannot reach your user manager")
    assert problems(lines)[1] == "  fix: log in as that user (or loginctl enable-linger USER) and make sure XDG_RUNTIME_DIR is set"


def test_pystemd_missing(flow: Flow) -> None:
    # miniq installed without its dependency pystemd.
    wheelhouse = flow.sb.wheelhouse  # type: ignore[attr-defined]
    flow.sh(f"python3 -m venv ~/nopystemd && ~/nopystemd/bin/pip install -q --no-index --find-links {wheelhouse} --no-deps miniq click")
    proc = flow.run([f"{flow.home}/nopystemd/bin/miniq", "doctor"], check=False)
    code, lines = proc.returncode, proc.stdout.splitlines()
    assert code == 1
    assert problems(lines)[:2] == [
        "problem: pystemd is not installed, so jobs cannot get scopes",
        "  fix: pip install pystemd (in miniq's environment), or apt-get install python3-pystemd",
    ]
