"""The Debian package as a Debian maintainer ships it, in the sandbox's systemd.

Built from this checkout with Debian's tools (packaging/build-deb.sh, lintian
--pedantic clean) and installed with apt.  What is checked, in order, on one
sandbox: install makes the system queue ready; an administrator's disable
survives remove and reinstall; a mask survives an upgrade; purge removes the
queue's data and keeps what the administrator added; an upgrade from the
previous release (0.2.0, built from its commit) with jobs queued, delayed,
waiting on a dependency and running loses and doubles none.
piuparts, Debian's own checker, runs in test_piuparts.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

pytestmark = pytest.mark.systemd
APT = {"DEBIAN_FRONTEND": "noninteractive"}
READY = ("miniq-process.path", "miniq-process.timer", "miniq-api.socket")
HELLO = '#!/bin/sh\necho "hello $1 from $(id -un)"\n'


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from conftest import build_deb, build_previous_deb, deb_build_output, fetch_dependencies, lintian_tags

    new = build_deb()
    tags, lint = lintian_tags(new)
    print("lintian --pedantic -I -E:", tags or "no tags")
    assert tags == [] and "no-manual-page" not in deb_build_output(), lint
    old = build_previous_deb(tmp_path_factory.mktemp("previous"))
    fetch_dependencies(new)
    return {"new": new, "old": old}


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]) -> Iterator[Sandbox]:
    from conftest import package_sandbox

    sb = package_sandbox(tmp_path_factory.mktemp("debsandbox") / "scratch", "deb", list(debs.values()))
    try:
        sb.add_user("alice")
        yield sb
    finally:
        sb.close()


def apt(box: Sandbox, *args: str) -> str:
    out: str = box.run(["apt-get", "-y", *args], env=APT, timeout=300).stdout
    return out


def dpkg(box: Sandbox, *args: str) -> str:
    proc = box.run(["dpkg", *args], env=APT, timeout=300)
    return str(proc.stdout + proc.stderr)


def enabled(box: Sandbox, unit: str) -> str:
    return str(box.run(["systemctl", "is-enabled", unit], check=False).stdout.strip())


def active(box: Sandbox, unit: str) -> str:
    return str(box.run(["systemctl", "is-active", unit], check=False).stdout.strip())


def miniq_processes(box: Sandbox) -> str:
    return str(box.run(["pgrep", "-a", "-f", "bin/miniq"], check=False).stdout)


def test_install_makes_the_system_queue_ready(box: Sandbox, debs: dict[str, Path]) -> None:
    out = apt(box, "install", str(debs["new"]))
    assert "Setting up miniq (0.3.0)" in out
    assert box.run(["python3", "-c", "import pystemd; print(pystemd.__version__)"]).stdout.strip() == "0.11.0"
    for unit in READY:
        assert (enabled(box, unit), active(box, unit)) == ("enabled", "active"), unit
    assert box.run(["stat", "-c", "%U %a", "/var/lib/miniq"]).stdout.strip() == "root 711"
    # Units once, each with its documentation; the helper answers its socket.
    files = box.run(["dpkg", "-L", "miniq"]).stdout.split()
    assert not [f for f in files if "/dist-packages/miniq/units/" in f]
    for unit in (*READY, "miniq-process.service", "miniq-api.service"):
        assert "man:miniq(1)" in box.run(["systemctl", "show", "-P", "Documentation", unit]).stdout, unit
    root = Flow(box, None, "--system", "/usr/bin/miniq")
    alice = Flow(box, "alice", "--user", "/usr/bin/miniq")
    # A user's units are theirs to turn on (README), with one line.
    assert box.run(["systemctl", "--user", "is-enabled", "miniq-process.path"], user="alice", check=False).stdout.strip() == "disabled"
    alice.run(["systemctl", "--user", "enable", "--now", "miniq-process.timer", "miniq-process.path"])
    from .common import readme_block

    block = readme_block("Then, in the same shell, as the same user")
    for flow in (root, alice):
        text = flow.run(["bash", "-e", "-c", block], timeout=120).stdout
        assert text.strip().splitlines()[-1] == "notify: Title - This is a message! (9)", text
    root.add_job("hello", HELLO)
    shared = alice.run(["miniq", "--system", "enqueue", "hello", "through-the-helper"]).stdout.strip()
    assert alice.run(["miniq", "--system", "wait", shared], timeout=60).returncode == 0
    assert alice.run(["miniq", "--system", "logs", shared]).stdout == "hello through-the-helper from alice\n"
    assert box.run(["man", "-w", "miniq"]).stdout.strip() == "/usr/share/man/man1/miniq.1.gz"
    completion = box.run(["bash", "-c", "source /usr/share/bash-completion/completions/miniq && complete -p miniq"]).stdout
    assert completion.strip() == "complete -o nosort -F _miniq_completion miniq"
    # install-units of the package's own miniq (a user with a root elsewhere) takes its
    # templates from the units the package ships once.
    box.add_user("bob")
    bob = Flow(box, "bob", "--user", "/usr/bin/miniq")
    proc = bob.run(["miniq", "--user", "--root", "/home/bob/q", "install-units"])
    assert "installed /home/bob/.config/systemd/user/miniq-process.path" in proc.stdout
    assert "DirectoryNotEmpty=/home/bob/q/queue" in box.path("/home/bob/.config/systemd/user/miniq-process.path").read_text()
    bob.run(["miniq", "--user", "uninstall-units"])


def _units(box: Sandbox, *flags: str) -> list[str]:
    """Every miniq unit systemd has loaded (``flags``: a user manager), with its states."""
    out = box.run(["systemctl", *flags, "list-units", "--all", "--plain", "--no-legend", "miniq*"], check=False).stdout
    return [" ".join(line.split()[:4]) for line in out.splitlines() if line.strip()]


def test_remove_stops_the_triggers_first_and_keeps_the_queue_and_the_administrators_choices(box: Sandbox, debs: dict[str, Path]) -> None:
    """With a job running, one queued and a wake timer armed: nothing starts
    during the removal, no unit is left failed or behind, each job is back
    (the running one with one interrupted attempt) and none ran."""
    root = Flow(box, None, "--system", "/usr/bin/miniq")
    alice = Flow(box, "alice", "--user", "/usr/bin/miniq")
    box.run(["loginctl", "enable-linger", "alice"])
    box.run(["systemctl", "disable", "--now", "miniq-process.timer"])
    done = root.run(["miniq", "enqueue", "hello", "before"]).stdout.strip()
    root.wait_final([done], timeout=30)
    later = root.run(["miniq", "enqueue", "--in", "1h", "hello", "later"]).stdout.strip()
    root.add_job("long", "#!/bin/sh\nexec sleep 300\n")
    running = root.run(["miniq", "enqueue", "long"]).stdout.strip()
    root.wait_running(running)
    queued = root.run(["miniq", "enqueue", "hello", "queued"]).stdout.strip()  # behind the long one (parallel 1)
    alice.add_job("hello", HELLO)
    alices = alice.run(["miniq", "enqueue", "--in", "1h", "hello", "hers"]).stdout.strip()  # her processor arms a wake timer
    deadline = time.monotonic() + 30
    while not [u for u in _units(box, "--user", "-M", "alice@") if u.startswith("miniq-wake-")]:
        assert time.monotonic() < deadline, _units(box, "--user", "-M", "alice@")
        time.sleep(0.5)
    cursor = box.run(["journalctl", "-n", "0", "--show-cursor", "--no-pager"]).stdout.strip().rsplit("cursor: ", 1)[-1]

    removal = apt(box, "remove", "miniq")
    print(f"--- apt-get remove miniq, a job running, one queued, wake timers armed (root's, alice's):\n{removal}")
    time.sleep(2)
    started = box.run(["journalctl", "--no-pager", "-o", "cat", "--after-cursor", cursor]).stdout
    assert "Starting miniq job processor" not in started, started  # nothing started the processor again
    assert not [u for u in _units(box) if "failed" in u or u.startswith("miniq-wake-")], _units(box)
    hers = _units(box, "--user", "-M", "alice@")
    assert not [u for u in hers if "failed" in u or "active" in u.split()[2:3] or u.startswith("miniq-wake-")], hers
    assert miniq_processes(box) == ""
    assert box.path(f"/var/lib/miniq/done/{done}.json").exists()
    assert box.path(f"/var/lib/miniq/queue/1000-{queued}.json").exists()  # still queued: it did not run
    delayed = sorted(p.name.split("-", 1)[1] for p in box.path("/var/lib/miniq/delayed").iterdir())
    assert delayed == sorted([f"{later}.json", f"{running}.json"])
    # The running job was stopped with its processor and put back, recorded once, to run again.
    assert list(box.path("/var/lib/miniq/running").iterdir()) == []
    [back] = box.path("/var/lib/miniq/delayed").glob(f"*-{running}.json")
    attempts = [(a["reason"], a.get("cause")) for a in json.loads(back.read_text())["attempts"]]
    assert attempts == [("its processor was stopped", "stopped")]
    # A lingering user's queue after the package went: nothing restarts without end, nothing fails.
    time.sleep(3)
    restarts = box.run(["systemctl", "--user", "-M", "alice@", "show", "-P", "NRestarts", "miniq-process.service"]).stdout.strip()
    assert restarts in ("0", ""), restarts

    apt(box, "install", str(debs["new"]))
    assert enabled(box, "miniq-process.timer") == "disabled"  # the administrator's choice, kept
    assert (enabled(box, "miniq-process.path"), active(box, "miniq-process.path")) == ("enabled", "active")
    # alice's queue, which she enabled, runs again; her job is hers to wait for.
    hers = box.run(["systemctl", "--user", "-M", "alice@", "is-active", "miniq-process.path"], check=False).stdout.strip()
    assert hers == "active", hers
    alice.run(["miniq", "cancel", alices])
    box.run(["systemctl", "enable", "--now", "miniq-process.timer"])
    root.run(["miniq", "cancel", running, later])  # the long one would run again first (parallel 1)
    root.wait_final([queued], timeout=60)


def test_a_mask_survives_an_upgrade(box: Sandbox, debs: dict[str, Path]) -> None:
    box.run(["systemctl", "mask", "--now", "miniq-api.socket"])
    try:
        dpkg(box, "-i", str(debs["new"]))  # the same version again: what an upgrade's scripts do
        assert enabled(box, "miniq-api.socket") == "masked"
        assert active(box, "miniq-api.socket") == "inactive"
    finally:
        box.run(["systemctl", "unmask", "miniq-api.socket"])
        box.run(["systemctl", "start", "miniq-api.socket"])


def test_an_upgrade_stops_a_running_helper_and_its_socket_starts_the_new_one(box: Sandbox, debs: dict[str, Path]) -> None:
    """miniq.preinst stops the helper before the files change (0.2, which had no such unit, is
    test_an_upgrade_from_the_previous_release...: nothing said); the next request starts it again."""
    box.run(["miniq", "--system", "list"], user="alice")  # the socket starts the helper; it stays 30 s idle
    before = box.run(["systemctl", "show", "-P", "MainPID", "miniq-api.service"]).stdout.strip()
    assert before != "0" and active(box, "miniq-api.service") == "active"
    out = dpkg(box, "-i", str(debs["new"]))  # the same version again: what an upgrade's scripts do
    assert "failed" not in out.lower() and "error" not in out.lower(), out
    assert active(box, "miniq-api.service") == "inactive" and active(box, "miniq-api.socket") == "active"
    assert box.run(["miniq", "--system", "list"], user="alice").returncode == 0
    after = box.run(["systemctl", "show", "-P", "MainPID", "miniq-api.service"]).stdout.strip()
    assert after not in ("0", before), (before, after)


def test_purge_removes_the_data_and_keeps_what_the_administrator_added(box: Sandbox, debs: dict[str, Path]) -> None:
    root = Flow(box, None, "--system", "/usr/bin/miniq")
    job = root.run(["miniq", "enqueue", "hello", "x"]).stdout.strip()
    root.wait_final([job], timeout=30)
    box.sh("printf '[limits]\\ntimeout = 1h\\n' > /var/lib/miniq/miniq.conf")
    root.run(["miniq", "pause", "hello"])
    root.run(["miniq", "enqueue", "--unique-key", "k", "hello", "held"])
    schedule = root.run(["miniq", "every", "daily", "hello", "every day"]).stdout.split(":")[0]
    assert box.run(["systemctl", "is-active", f"miniq-every-{schedule}.timer"]).stdout.strip() == "active"
    out = dpkg(box, "--purge", "miniq")
    assert box.run(["systemctl", "is-active", f"miniq-every-{schedule}.timer"], check=False).stdout.strip() == "inactive"
    assert "miniq: kept what an administrator added in /var/lib/miniq (job types in jobs/, miniq.conf)" in out
    assert sorted(p.name for p in box.path("/var/lib/miniq").iterdir()) == ["jobs", "miniq.conf"]
    for unit in READY:
        assert not box.run(["find", "/etc/systemd/system", "-name", unit], check=False).stdout.strip(), unit
    # Nothing of miniq left loaded or behind: units, the helper's socket, the schedules' stamps.
    assert _units(box) == [], _units(box)
    assert not box.path("/run/miniq/api.socket").exists()
    assert not box.run(["find", "/var/lib/systemd/timers", "-name", "stamp-miniq*"], check=False).stdout.strip()
    # A purge after a plain install leaves nothing.
    box.run(["rm", "-r", "/var/lib/miniq"])
    apt(box, "install", str(debs["new"]))
    dpkg(box, "--purge", "miniq")
    assert not box.path("/var/lib/miniq").exists()
    assert not box.run(["find", "/etc/systemd", "-name", "miniq*"], check=False).stdout.strip()
    assert not box.path("/var/lib/systemd/deb-systemd-helper-enabled/miniq-process.path.dsh-also").exists()


def _previous_state(box: Sandbox, root: Flow) -> dict[str, str]:
    """0.2.0 installed the way its README said, with a job in every state."""
    root.add_job("hello", HELLO)
    root.add_job("long", '#!/bin/sh\necho "long started, pid $$"\nsleep "$1"\necho "long ended"\n')
    jobs = {"running": root.run(["miniq", "enqueue", "long", "25"]).stdout.strip()}
    root.wait_running(jobs["running"])
    jobs["queued"] = root.run(["miniq", "enqueue", "hello", "queued"]).stdout.strip()
    jobs["delayed"] = root.run(["miniq", "enqueue", "--in", "40s", "hello", "delayed"]).stdout.strip()
    jobs["dependent"] = root.run(["miniq", "enqueue", "--after", jobs["running"], "hello", "dependent"]).stdout.strip()
    # A job file under a 0.1.0 name (queue/ID.json), staged and renamed in as writers must.
    from miniq.core.job import new_id

    legacy = new_id()
    data = {"miniq": 1, "id": legacy, "name": "hello", "argv": ["legacy"], "submitted": "2026-11-28T00:00:00+00:00",
            "submitter": {"uid": 0, "user": "root", "host": "sandbox", "pid": 1}}  # fmt: skip
    box.run(["install", "-m", "600", "/dev/stdin", f"/var/lib/miniq/tmp/.{legacy}"], input=json.dumps(data))
    jobs["legacy name"] = legacy
    return jobs


def test_an_upgrade_from_the_previous_release_loses_and_doubles_no_job(box: Sandbox, debs: dict[str, Path]) -> None:
    """0.2.0 to this version with jobs queued, delayed, waiting on a dependency and running.

    The running job is left to finish under the processor that runs it (the
    package never stops the processor on upgrade: a long job is not cut short
    by unattended upgrades), and the next processor is the new version's."""
    box.run(["rm", "-rf", "/var/lib/miniq"])
    apt(box, "install", str(debs["old"]))
    assert box.run(["dpkg-query", "-W", "-f", "${Version}", "miniq"]).stdout == "0.2.0"
    box.run(["systemctl", "enable", "--now", "miniq-process.path", "miniq-api.socket"])
    box.run(["systemctl", "mask", "miniq-process.timer"])  # an administrator's choice before the upgrade
    box.run(["install", "-m", "644", "/dev/stdin", "/var/lib/miniq/miniq.conf"], input="[limits]\ntimeout = 2h\n")  # 0.2's place
    root = Flow(box, None, "--system", "/usr/bin/miniq")
    jobs = _previous_state(box, root)
    old_pid = box.run(["systemctl", "show", "-P", "MainPID", "miniq-process.service"]).stdout.strip()
    assert old_pid != "0"

    proc = box.run(["apt-get", "-y", "install", str(debs["new"])], env=APT, timeout=300)
    out = proc.stdout + proc.stderr
    print(f"--- apt-get install miniq 0.3.0 over 0.2.0, a job running, the timer masked, miniq.conf in 0.2's place:\n{out}")
    assert "Unpacking miniq (0.3.0) over (0.2.0)" in out
    # In place: the mask kept without a word of error, the configuration moved where Debian keeps it.
    assert "error" not in out.lower() and "failed" not in out.lower(), out
    assert enabled(box, "miniq-process.timer") == "masked"
    assert "miniq: moved /var/lib/miniq/miniq.conf to /etc/miniq/miniq.conf" in out, out
    assert box.path("/etc/miniq/miniq.conf").read_text() == "[limits]\ntimeout = 2h\n"
    assert not box.path("/var/lib/miniq/miniq.conf").exists()
    box.run(["systemctl", "unmask", "miniq-process.timer"])
    box.run(["systemctl", "enable", "--now", "miniq-process.timer"])
    # The old processor still runs the job it had; the new units are live.
    assert box.run(["systemctl", "show", "-P", "MainPID", "miniq-process.service"]).stdout.strip() == old_pid
    assert root.record(jobs["running"])["state"] == "running"
    assert not box.path("/usr/lib/systemd/system/miniq-api@.service").exists()
    assert "miniq-api@" not in box.run(["systemctl", "list-unit-files", "miniq*"]).stdout
    assert "Accept=no" in box.run(["systemctl", "cat", "miniq-api.socket"]).stdout
    assert box.run(["systemctl", "show", "-P", "NeedDaemonReload", "miniq-process.path"]).stdout.strip() == "no"
    for unit in READY:
        assert (enabled(box, unit), active(box, unit)) == ("enabled", "active"), unit
    # Once the old processor has finished what it had, a job under a 0.1.0 name goes to the new one.
    root.wait_final([jobs["running"]], timeout=60)
    deadline = time.monotonic() + 60
    while box.run(["systemctl", "show", "-P", "MainPID", "miniq-process.service"]).stdout.strip() == old_pid:
        assert time.monotonic() < deadline, "the old processor did not end"
        time.sleep(0.2)
    box.run(["mv", f"/var/lib/miniq/tmp/.{jobs['legacy name']}", f"/var/lib/miniq/queue/{jobs['legacy name']}.json"])

    root.wait_final(list(jobs.values()), timeout=120)
    for state, job_id in jobs.items():
        record = root.record(job_id)
        assert record["state"] == "done", (state, record)
        assert [a["outcome"] for a in record["attempts"]] == ["exited"], (state, record["attempts"])
    longest = root.record(jobs["running"])
    assert longest["result"]["run"].split("+")[3] == old_pid, "the running job was not left to its processor"
    assert root.record(jobs["legacy name"])["result"]["run"].split("+")[3] != old_pid
    assert root.record(jobs["dependent"])["result"]["started"] >= longest["result"]["ended"]
    assert box.run(["miniq", "--version"]).stdout.strip() == "miniq, version 0.3.0"
    # Through the new helper, a user acts as before.
    alice = Flow(box, "alice", "--user", "/usr/bin/miniq")
    job = alice.run(["miniq", "--system", "enqueue", "hello", "after"]).stdout.strip()
    assert alice.run(["miniq", "--system", "wait", job], timeout=60).returncode == 0
