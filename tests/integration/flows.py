"""The user-visible flows, run inside the sandbox for one kind of installation.

A ``Flow`` is one installation as README.md describes it: a non-root user
with user units, root with system units, or root with user units.  The
tests in test_*_manager.py run the same checks against each.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from typing import Any

from testbed.sandbox import Sandbox

NOTIFY = """#!/bin/sh
date +%s.%N > "$MINIQ_ROOT/started-$MINIQ_JOB_ID"
echo "args: $# [$1] [$2] [$3] user=$(id -un)"
grep -h miniq-job /proc/self/cgroup | head -n 1 >&2
"""


@dataclass
class Flow:
    sb: Sandbox
    user: str | None  # None: root
    mode: str  # "--user" or "--system"
    command: str | None = None  # miniq's path when not the README install's (the .deb's)

    @property
    def home(self) -> str:
        return f"/home/{self.user}" if self.user else "/root"

    @property
    def miniq(self) -> str:
        if self.command:
            return self.command
        return f"{self.home}/.local/bin/miniq" if self.mode == "--user" else "/usr/local/bin/miniq"

    @property
    def root(self) -> str:
        return f"{self.home}/.local/state/miniq" if self.mode == "--user" else "/var/lib/miniq"

    @property
    def systemctl(self) -> list[str]:
        return ["systemctl", "--user"] if self.mode == "--user" else ["systemctl"]

    @property
    def journal(self) -> list[str]:
        """The README's command to see the processor's log for this installation."""
        if self.mode == "--system":
            return ["journalctl", "-u", "miniq-process"]
        if self.user is None:  # root's user units log to the system journal
            return ["journalctl", "--user-unit", "miniq-process"]
        return ["journalctl", "--user", "-u", "miniq-process"]

    def run(self, args: list[str], **kw: Any) -> Any:
        return self.sb.run(args, user=self.user, **kw)

    def sh(self, script: str, **kw: Any) -> Any:
        return self.sb.sh(script, user=self.user, **kw)

    def cli(self, *args: str, **kw: Any) -> Any:
        """miniq as README tells this user to call it (the root's user queue needs --user)."""
        flag = ["--user"] if self.mode == "--user" and self.user is None else []
        return self.run([self.miniq, *flag, *args], **kw)

    # -- set-up ---------------------------------------------------------------

    def install(self, repo: str, wheelhouse: str) -> str:
        """README step 1, literally; pip is pointed at local wheels (no network)."""
        args = ["bash", f"{repo}/packaging/install.sh"]
        if self.user is None and self.mode == "--user":
            args.append("--user")
        env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheelhouse}
        out: str = self.run(args, env=env, timeout=300).stdout
        return out

    def enqueue_many(self, name: str, count: int, numbered: bool = False) -> list[str]:
        """Enqueue ``count`` jobs through the library (the CLI would take
        minutes to start thousands of times); ``numbered`` passes i as argument."""
        venv = f"{self.home}/.local/share/miniq/venv" if self.mode == "--user" else "/opt/miniq/venv"
        script = (
            "import sys; from pathlib import Path; from miniq import Queue\n"
            "q = Queue(Path(sys.argv[1]))\n"
            f"for i in range({count}): print(q.enqueue({name!r}, [str(i)] if {numbered} else []).id)"
        )
        out: str = self.run([f"{venv}/bin/python", "-c", script, self.root], timeout=300).stdout
        return out.split()

    def pause(self, *units: str) -> None:
        """Stop ``units`` (default: the path unit and the timer) and the
        processor itself, which may still be lingering for more jobs."""
        units = units or ("miniq-process.path", "miniq-process.timer")
        # Triggers first, then the service: a stop job for the service queued
        # beside its triggers' is cancelled when one of them starts it meanwhile
        # ("Job for miniq-process.service canceled", as tests/vm/machine.py
        # says).  A trigger left running (the timer, in the timer's test) can
        # still start it during the stop: then the stop is asked again.
        self.run([*self.systemctl, "stop", *units])
        for attempt in range(3):
            proc = self.run([*self.systemctl, "stop", "miniq-process.service"], check=attempt == 2)
            if proc.returncode == 0 or "canceled" not in proc.stderr:
                break
        assert proc.returncode == 0, proc.stderr

    def resume(self, *units: str) -> None:
        self.run([*self.systemctl, "start", *(units or ("miniq-process.path", "miniq-process.timer"))])

    def add_job(self, name: str, body: str) -> None:
        self.sh(f"mkdir -p {self.root}/jobs && cat > {self.root}/jobs/{name}.job && chmod +x {self.root}/jobs/{name}.job", input=body)

    # -- observing ------------------------------------------------------------

    def record(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.cli("show", "--json", job_id).stdout)
        return data

    def wait_running(self, job_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.record(job_id)["state"] != "running":
            assert time.monotonic() < deadline, f"{job_id} did not start within {timeout} s\n{self.diagnose()}"
            time.sleep(0.05)

    def wait_final(self, job_ids: list[str], timeout: float) -> float:
        """Wait until every job has a finished record; return seconds waited."""
        start = time.monotonic()
        pending = set(job_ids)
        while pending:
            for job_id in list(pending):
                if any(self.sb.path(f"{self.root}/{d}/{job_id}.json").exists() for d in ("done", "failed")):
                    pending.discard(job_id)
            if not pending:
                break
            if time.monotonic() - start > timeout:
                raise AssertionError(f"{len(pending)} job(s) not finished after {timeout} s, e.g. {sorted(pending)[:3]}\n{self.diagnose()}")
            time.sleep(0.05)
        return time.monotonic() - start

    def failed_units(self) -> list[str]:
        out = self.run([*self.systemctl, "list-units", "--failed", "--plain", "--no-legend", "miniq*"]).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def unit_state(self, unit: str) -> str:
        return str(self.run([*self.systemctl, "show", "-P", "ActiveState", unit]).stdout.strip())

    def job_scopes(self) -> list[str]:
        out = self.run([*self.systemctl, "list-units", "--all", "--plain", "--no-legend", "miniq-job-*"]).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def leftover_scopes(self, settle: float = 10.0) -> list[str]:
        """Job scopes still loaded ``settle`` seconds from now (or none, sooner).

        systemd unloads a scope once it sees its cgroup empty, which it learns
        asynchronously: a record can be written a moment before its scope goes.
        """
        deadline = time.monotonic() + settle
        while (scopes := self.job_scopes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if scopes:  # shown with the failure
            print(self.run([*self.systemctl, "status", "--no-pager", "-n", "20", *scopes], check=False).stdout)
        return scopes

    def journal_text(self) -> str:
        return str(self.run([*self.journal, "--no-pager", "-o", "cat"]).stdout)

    def diagnose(self) -> str:
        units = self.run([*self.systemctl, "list-units", "--all", "--no-pager", "miniq*"], check=False).stdout
        log = self.run([*self.journal, "--no-pager", "-n", "30"], check=False).stdout
        listing = self.sb.run(["find", self.root, "-maxdepth", "2"], check=False).stdout[-3000:]
        # miniq's processes wherever they run (a worker outside its service would not be in its unit's journal).
        each = "echo \"$p $(cat /proc/$p/cgroup) $(tr '\\0' ' ' < /proc/$p/cmdline)\""
        procs = self.sb.run(["sh", "-c", f"for p in $(pgrep -f 'bin/miniq'); do {each}; done"], check=False).stdout
        anywhere = self.sb.run(["journalctl", "--no-pager", "-n", "30", "SYSLOG_IDENTIFIER=miniq"], check=False).stdout
        return f"units:\n{units}\njournal:\n{log}\nminiq's processes:\n{procs}\nminiq's lines in any unit:\n{anywhere}\nfiles:\n{listing}"

    def enqueue_timed(self, *args: str) -> tuple[str, float]:
        """Enqueue and return (id, the time just before enqueue, sandbox clock)."""
        line = self.sh(f"t=$(date +%s.%N); {shlex.join([self.miniq, *self.cli_flag, 'enqueue', *args])}; echo $t").stdout.split()
        return line[0], float(line[1])

    @property
    def enforces_limits(self) -> bool:
        """Whether MemoryMax= and TasksMax= are enforced for this manager here.

        With cgroup v1 controllers (hybrid layout) systemd delegates neither
        the memory nor the pids controller to an unprivileged user's manager.
        """
        hybrid = self.sb.path("/sys/fs/cgroup/memory").is_dir()
        return not (hybrid and self.user is not None)

    @property
    def cli_flag(self) -> list[str]:
        return ["--user"] if self.mode == "--user" and self.user is None else []

    def started_at(self, job_id: str) -> float:
        return float(self.sb.path(f"{self.root}/started-{job_id}").read_text())
