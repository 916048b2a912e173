"""Several machines sharing one queue root: systemd sandboxes, each with its
own PID, mount, network and UTS namespaces and its own systemd, sharing one
directory of the host (like machines sharing a file server).

Each machine runs the system units for the shared root, installed the README
way; jobs append a line to a log outside the root, so a test can count how
often each job ran.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from testbed.sandbox import Sandbox

from .flows import Flow

ROOT = "root"
LOG = "log/runs.log"
# Each run appends "ID HOST" to the shared log, then waits if asked to.
COUNT = """#!/bin/sh
echo "$MINIQ_JOB_ID $(hostname)" >> "$SHARED/log/runs.log"
echo "ran on $(hostname)"
"""


@dataclass
class Machine:
    name: str
    hostname: str
    sandbox: Sandbox
    flow: Flow

    def sh(self, script: str, **kw: object) -> str:
        return str(self.flow.sh(script, **kw).stdout)

    def processor_pid(self) -> int:
        return int(self.flow.run(["systemctl", "show", "-P", "MainPID", "miniq-process.service"]).stdout.strip() or 0)

    def job_scopes(self) -> list[str]:
        return self.flow.job_scopes()

    def leftover_scopes(self) -> list[str]:
        return self.flow.leftover_scopes()

    def journal(self) -> str:
        return str(self.flow.run(["journalctl", "-u", "miniq-process", "--no-pager", "-o", "cat"], check=False).stdout)


@dataclass
class Cluster:
    shared: Path  # on the host; bound at the same path in every machine
    repo: str
    wheelhouse: str
    machines: dict[str, Machine] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return str(self.shared / ROOT)

    def boot(self, name: str, hostname: str, parallel: int = 1, timer_period: str = "10s") -> Machine:
        """Boot a machine and install miniq on it for the shared root (README step 1)."""
        scratch = self.shared.parent / f"scratch-{name}-{time.monotonic_ns()}"
        sb = Sandbox(scratch, f"{name}{time.monotonic_ns() % 100000}", binds=[Path(self.repo), Path(self.wheelhouse)],
                     hostname=hostname, shared=[self.shared])  # fmt: skip
        sb.boot()
        flow = Flow(sb, None, "--system")
        env = {"MINIQ_ROOT": self.root}
        flow.run(["bash", f"{self.repo}/packaging/install.sh"], env={**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": self.wheelhouse},
                 timeout=300)  # fmt: skip
        flow.run([flow.miniq, "install-units", "--now", "--timer-period", timer_period], env=env)
        if parallel > 1:
            flow.sh(
                "mkdir -p /etc/systemd/system/miniq-process.service.d && printf '[Service]\\nExecStart=\\n"
                f"ExecStart={flow.miniq} process --parallel {parallel}\\n' > /etc/systemd/system/miniq-process.service.d/parallel.conf"
                " && systemctl daemon-reload"
            )
        machine = Machine(name, hostname, sb, flow)
        self.machines[name] = machine
        return machine

    def enqueue_many(self, machine: str, name: str, count: int) -> list[str]:
        """Enqueue ``count`` jobs from ``machine`` through the library."""
        script = (
            "import sys; from pathlib import Path; from miniq import Queue\n"
            "q = Queue(Path(sys.argv[1]))\n"
            f"for i in range({count}): print(q.enqueue({name!r}, [str(i)]).id)"
        )
        out = self.machines[machine].flow.run(["/opt/miniq/venv/bin/python", "-c", script, self.root], timeout=600).stdout
        return str(out).split()

    def enqueue(self, machine: str, *args: str) -> str:
        flow = self.machines[machine].flow
        return str(flow.run([flow.miniq, "--root", self.root, "enqueue", *args]).stdout.strip())

    def add_job(self, name: str, body: str) -> None:
        path = self.shared / ROOT / "jobs" / f"{name}.job"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.replace("$SHARED", str(self.shared)))
        path.chmod(0o755)

    def configure(self, text: str) -> None:
        (self.shared / ROOT / "miniq.conf").write_text(text)

    def runs(self) -> list[tuple[str, str]]:
        try:
            lines = (self.shared / LOG).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [tuple(line.split(" ", 1)) for line in lines if line]  # type: ignore[misc]

    def record(self, job_id: str) -> dict[str, object] | None:
        import json

        for state in ("done", "failed"):
            path = self.shared / ROOT / state / f"{job_id}.json"
            if path.exists():
                data: dict[str, object] = json.loads(path.read_text())
                return data
        return None

    def wait_final(self, ids: list[str], timeout: float) -> float:
        start = time.monotonic()
        pending = set(ids)
        while pending:
            pending = {i for i in pending if not any((self.shared / ROOT / s / f"{i}.json").exists() for s in ("done", "failed"))}
            if pending and time.monotonic() - start > timeout:
                journals = "\n".join(f"--- {m.name}:\n{m.journal()[-2000:]}" for m in self.machines.values() if m.sandbox.pid1)
                raise AssertionError(f"{len(pending)} job(s) not finished after {timeout} s, e.g. {sorted(pending)[:3]}\n{journals}")
            time.sleep(0.1)
        return time.monotonic() - start

    def power_cut(self, name: str) -> None:
        """Kill a machine at once: every process of it dies, nothing is cleaned up."""
        self.machines[name].sandbox.close()

    def freeze(self, name: str) -> int:
        pid = self.machines[name].processor_pid()
        # The sandbox's PID namespace: signal it from inside.
        self.machines[name].flow.run(["kill", "-STOP", str(pid)])
        return pid

    def thaw(self, name: str, pid: int) -> None:
        self.machines[name].flow.run(["kill", "-CONT", str(pid)])

    def close(self) -> None:
        for machine in self.machines.values():
            machine.sandbox.close()


@contextlib.contextmanager
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, repo: str, lease: float) -> Iterator[Cluster]:
    """A cluster on a fresh shared directory: root 0700, leases of ``lease``
    seconds, the job type ``count``; every machine is cut at the end."""
    from conftest import require_testbed

    require_testbed()
    shared = tmp_path_factory.mktemp("shared")
    (shared / "log").mkdir()
    c = Cluster(shared, repo, str(wheelhouse))
    (shared / "root").mkdir(mode=0o700)
    c.configure(f"[processor]\nlease = {lease:g}s\n")
    c.add_job("count", COUNT)
    try:
        yield c
    finally:
        c.close()


__all__ = ["COUNT", "Cluster", "Machine", "shared_cluster", "signal"]
