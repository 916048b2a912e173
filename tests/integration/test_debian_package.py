"""The Debian package, built from this checkout and installed with apt in the sandbox.

Done-when of the packaging issue: build the .deb with Debian's tools,
`apt-get install ./miniq_*.deb`, enable the units as root and as a user,
see jobs run in both, remove the package, and check that nothing of miniq
runs any more while the queue files stay.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

pytestmark = pytest.mark.systemd
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def deb() -> Path:
    from conftest import build_deb, deb_build_output

    path = build_deb()
    assert "no-manual-page" not in deb_build_output(), "lintian misses a man page"
    # The sandbox has no network: fetch the dependencies into the host's apt
    # cache (which the sandbox's overlay sees) without installing them.
    fetch = subprocess.run(["apt-get", "install", "--download-only", "-y", str(path)], capture_output=True, text=True)
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr
    return path


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, deb: Path) -> Iterator[Sandbox]:
    from conftest import require_testbed

    require_testbed()
    sb = Sandbox(tmp_path_factory.mktemp("debsandbox") / "scratch", "deb", binds=[REPO])
    sb.boot()
    try:
        yield sb
    finally:
        sb.close()


def active_miniq_units(sb: Sandbox, user: str | None) -> list[str]:
    args = ["systemctl", *(["--user"] if user else []), "list-units", "--plain", "--no-legend", "--state=active,activating", "miniq*"]
    return [line.split()[0] for line in sb.run(args, user=user).stdout.splitlines() if line.strip()]


def test_install_enable_run_remove(box: Sandbox, deb: Path) -> None:
    out = box.sh(f"cd {deb.parent} && apt-get install -y ./miniq_*.deb", env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    assert "Setting up miniq" in out.stdout
    assert box.run(["python3", "-c", "import pystemd; print(pystemd.__version__)"]).stdout.strip() == "0.11.0"
    # Nothing is enabled by installing.
    assert box.run(["systemctl", "is-enabled", "miniq-process.path"], check=False).stdout.strip() == "disabled"
    assert box.run(["stat", "-c", "%U %a", "/var/lib/miniq"]).stdout.strip() == "root 711"

    root = Flow(box, None, "--system", "/usr/bin/miniq")
    root.run(["systemctl", "enable", "--now", "miniq-process.timer", "miniq-process.path"])
    root.add_job("hello", '#!/bin/sh\necho "hello $1 from $(id -un)"\n')
    job = root.run(["miniq", "enqueue", "hello", "root"]).stdout.strip()

    box.add_user("alice")
    alice = Flow(box, "alice", "--user", "/usr/bin/miniq")
    alice.run(["systemctl", "--user", "enable", "--now", "miniq-process.timer", "miniq-process.path"])
    alice.add_job("hello", '#!/bin/sh\necho "hello $1 from $(id -un)"\n')
    ajob = alice.run(["miniq", "enqueue", "hello", "alice"]).stdout.strip()

    root.wait_final([job], timeout=30)
    alice.wait_final([ajob], timeout=30)
    # README's Getting started, literally, through the package, as root and as a user.
    from .common import readme_block

    block = readme_block("Then, in the same shell, as the same user")
    for flow in (root, alice):
        out = flow.run(["bash", "-e", "-c", block], timeout=120).stdout
        assert out.strip().splitlines()[-1] == "notify: Title - This is a message! (9)", out
    assert box.run(["man", "-w", "miniq"]).stdout.strip() == "/usr/share/man/man1/miniq.1.gz"
    assert box.run(["man", "-w", "miniq-enqueue"]).stdout.strip() == "/usr/share/man/man1/miniq-enqueue.1.gz"
    completion = box.run(["bash", "-c", "source /usr/share/bash-completion/completions/miniq && complete -p miniq"]).stdout
    assert completion.strip() == "complete -o nosort -F _miniq_completion miniq"
    assert box.run(["systemctl", "is-enabled", "miniq-api.socket"], check=False).stdout.strip() == "disabled"
    # With Debian's click (8.1): the global options, and a user's command on the system queue.
    assert box.run(["miniq", "--system", "where"]).stdout.strip() == "/var/lib/miniq"
    assert alice.run(["miniq", "--user", "where"]).stdout.strip() == "/home/alice/.local/state/miniq"
    box.run(["systemctl", "enable", "--now", "miniq-api.socket"])
    shared = alice.run(["miniq", "--system", "enqueue", "hello", "through-the-helper"]).stdout.strip()
    assert alice.run(["miniq", "--system", "wait", shared], timeout=60).returncode == 0
    assert alice.run(["miniq", "--system", "logs", shared]).stdout == "hello through-the-helper from alice\n"
    assert root.record(job)["state"] == "done" and alice.record(ajob)["state"] == "done"
    assert "hello root from root" in root.journal_text()
    assert "hello alice from alice" in alice.journal_text()
    # Something left on disk and something running when the package goes.
    later = root.run(["miniq", "enqueue", "--in", "1h", "hello", "later"]).stdout.strip()
    root.add_job("long", "#!/bin/sh\nexec sleep 300\n")
    running = root.run(["miniq", "enqueue", "long"]).stdout.strip()
    root.wait_running(running)

    box.run(["apt-get", "remove", "-y", "miniq"], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=300)
    time.sleep(0.5)
    assert active_miniq_units(box, None) == []
    assert active_miniq_units(box, "alice") == []
    assert box.run(["pgrep", "-f", "miniq"], check=False).stdout == ""
    assert box.path(f"/var/lib/miniq/done/{job}.json").exists()
    delayed = sorted(p.name.split("-", 1)[1] for p in box.path("/var/lib/miniq/delayed").iterdir())
    assert delayed == sorted([f"{later}.json", f"{running}.json"])
    # The running job was stopped with its processor and put back, to run again.
    assert list(box.path("/var/lib/miniq/running").iterdir()) == []
    back = box.run(["python3", "-c", f"import json,glob; print(json.load(open(glob.glob('/var/lib/miniq/delayed/*-{running}.json')[0]))"
                    "['attempts'][0]['reason'])"]).stdout.strip()  # fmt: skip
    assert back == "its processor was stopped"
    assert box.path(f"/home/alice/.local/state/miniq/done/{ajob}.json").exists()
