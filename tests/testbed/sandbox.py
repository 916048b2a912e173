"""A throwaway systemd, booted in namespaces, for integration tests.

``Sandbox.boot()`` puts a launcher into a new cgroup of its own in every
hierarchy, unshares PID, mount, UTS, IPC, network and cgroup namespaces and
runs ``inner.sh``, which makes an overlay of the host's ``/`` (writes go to a
tmpfs), mounts fresh /proc, /sys, /run, /tmp and cgroup file systems, masks
units that would touch the host, pivots into it and execs systemd as PID 1.

Guarantees relied on by the tests:
  * nothing is written on the host outside ``scratch`` (itself emptied by the
    tmpfs that covers it) and the sandbox's cgroups, which ``close`` removes;
  * ``close`` kills the whole PID namespace and removes the cgroups, and the
    pytest fixture calls it even when a test fails.

Commands run inside through ``nsenter -a`` with a clean environment, as root
or (``user=``) through ``runuser`` with that user's XDG_RUNTIME_DIR.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CGROUP_ROOT = Path("/sys/fs/cgroup")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxError(RuntimeError):
    pass


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of the cgroup mounts of the host."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            point = left.split()[4]
            fstype, _, opts = right.split()[:3]
            if fstype in ("cgroup", "cgroup2") and point.startswith(str(CGROUP_ROOT)):
                found.append((point, fstype, opts))
    return found


def _own_cgroups() -> dict[str, str]:
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            paths[controllers] = path
    return paths


class Sandbox:
    def __init__(
        self,
        scratch: Path,
        name: str,
        binds: list[Path] = (),
        hostname: str = "sandbox",
        shared: list[Path] = (),  # type: ignore[assignment]
    ) -> None:
        self.scratch = Path(scratch)
        self.name = name
        self.binds = [Path(b) for b in binds]
        #: Host directories bound writable at the same path: what sandboxes share,
        #: like several machines sharing one file system.
        self.shared = [Path(s) for s in shared]
        self.hostname = hostname
        self.pid1: int | None = None
        self.launcher: subprocess.Popen[bytes] | None = None
        self.cgroups: list[Path] = []
        self.log = self.scratch.parent / f"{name}.boot.log"

    # -- lifetime -----------------------------------------------------------

    def _make_cgroups(self) -> str:
        own = _own_cgroups()
        specs = []
        for point, fstype, opts in _mounts():
            if fstype == "cgroup2":
                key = ""
                specs.append("unified" if point == str(CGROUP_ROOT) else f"{Path(point).name}:none")
            else:
                wanted = [o for o in opts.split(",") if o not in ("rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec")]
                key = ",".join(wanted)
                specs.append(f"{Path(point).name}:{'none,' + key if key.startswith('name=') else key}")
            parent = Path(point) / own.get(key, "/").lstrip("/")
            cg = parent / f"miniq-testbed-{self.name}-{os.getpid()}"
            cg.mkdir(exist_ok=True)
            if "cpuset" in key.split(","):
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (cg / knob).write_text((parent / knob).read_text())
            self.cgroups.append(cg)
        if specs == ["unified"]:
            return "unified"
        return " ".join(s for s in specs)

    def boot(self, timeout: float = 60.0) -> Sandbox:
        self.scratch.mkdir(parents=True, exist_ok=True)
        try:
            spec = self._make_cgroups()
            env = {
                "PATH": PATH,
                "TESTBED_SCRATCH": str(self.scratch),
                "TESTBED_CGROUPS": spec,
                "TESTBED_BINDS": " ".join(str(b) for b in self.binds),
                "TESTBED_SHARED": " ".join(str(s) for s in self.shared),
                "TESTBED_HOSTNAME": self.hostname,
            }
            unshare = "unshare --pid --fork --mount --uts --ipc --net --cgroup --propagation private"
            script = f"read -r _ && exec {unshare} -- /bin/bash {shlex.quote(str(HERE / 'inner.sh'))}"
            with open(self.log, "wb") as log:
                self.launcher = subprocess.Popen(
                    ["/bin/bash", "-c", script], stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env
                )
            for cg in self.cgroups:
                (cg / "cgroup.procs").write_text(str(self.launcher.pid))
            assert self.launcher.stdin is not None
            self.launcher.stdin.write(b"go\n")
            self.launcher.stdin.close()
            self.pid1 = self._find_pid1(timeout)
            self._wait_running(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _find_pid1(self, timeout: float) -> int:
        assert self.launcher is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.launcher.poll() is not None:
                raise SandboxError(f"the sandbox launcher exited with {self.launcher.returncode}: {self.read_log()}")
            try:
                children = Path(f"/proc/{self.launcher.pid}/task/{self.launcher.pid}/children").read_text().split()
            except FileNotFoundError:
                children = []
            if children:
                return int(children[0])
            time.sleep(0.01)
        raise SandboxError("the sandbox's PID 1 did not appear")

    def _wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.launcher is not None and self.launcher.poll() is not None:
                raise SandboxError(f"the sandbox's systemd exited: {self.read_log()}")
            proc = self.run(["systemctl", "is-system-running"], check=False, timeout=30)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.05)
        raise SandboxError(f"systemd did not finish booting (state {state!r}): {self.read_log()}")

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self) -> None:
        """Kill everything in the sandbox and remove its cgroups."""
        for pid in (self.pid1, self.launcher.pid if self.launcher else None):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.launcher is not None:
            self.launcher.wait()
        deadline = time.monotonic() + 30
        for cg in self.cgroups:
            while True:
                try:
                    for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                        sub.rmdir()
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        self.cgroups = []
        self.pid1 = None

    # -- driving ------------------------------------------------------------

    def run(
        self,
        args: list[str],
        user: str | None = None,
        check: bool = True,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside, as root or as ``user`` with their session variables."""
        cmd = self.command(args, user, env)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, input=input, stdin=None if input else subprocess.DEVNULL
        )
        if check and proc.returncode != 0:
            raise SandboxError(f"{shlex.join(args)} (as {user or 'root'}) exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def command(self, args: list[str], user: str | None = None, env: dict[str, str] | None = None) -> list[str]:
        """The host's command line that runs ``args`` inside, as root or ``user``."""
        assert self.pid1, "the sandbox is not running"
        base = {"PATH": PATH, "LANG": "C.UTF-8"}
        if user is None:
            base.update(HOME="/root", USER="root", XDG_RUNTIME_DIR="/run/user/0")
            prefix: list[str] = []
        else:
            uid = self.uid(user)
            base.update(HOME=f"/home/{user}", USER=user, XDG_RUNTIME_DIR=f"/run/user/{uid}")
            prefix = ["runuser", "-u", user, "--"]
        base.update(env or {})
        return ["nsenter", "-t", str(self.pid1), "-a", "--", *prefix, "env", "-i", *(f"{k}={v}" for k, v in base.items()), *args]

    def popen(self, args: list[str], user: str | None = None, **kwargs: Any) -> subprocess.Popen[str]:
        """Start a command inside and return at once (stdout and stderr piped)."""
        return subprocess.Popen(
            self.command(args, user), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
        )

    def sh(self, script: str, user: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["/bin/bash", "-c", script], user=user, **kwargs)

    def uid(self, user: str) -> int:
        return int(self.run(["id", "-u", user]).stdout)

    def add_user(self, user: str) -> int:
        """Create a user with a running user manager; return the uid."""
        self.run(["useradd", "--create-home", "--shell", "/bin/bash", user])
        uid = self.uid(user)
        self.run(["systemctl", "start", f"user@{uid}.service"])
        return uid

    def path(self, inside: str | Path) -> Path:
        """The host's view of a path inside the sandbox (through /proc)."""
        return Path(f"/proc/{self.pid1}/root") / str(inside).lstrip("/")
