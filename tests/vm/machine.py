"""Driving a guest of the VM test bed from the host.

``VM(image, name, workdir).boot()`` starts qemu under software emulation
(TCG: this machine's /dev/kvm runs only PVM guest kernels, see
shared notes), with a throw-away qcow2 overlay over the cached root image,
a virtio-serial command channel (agent.py) and, when asked, a network link
to other guests (a qemu socket netdev: two guests, one virtual wire).
``run`` sends a command and returns its exit status and output; ``close``
quits qemu through its monitor and removes the overlay.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .image import Image


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


class VMError(RuntimeError):
    pass


class KernelHang(VMError):
    """The guest's kernel never started its first process."""


#: Seconds a guest's kernel may take to start /init.  Under TCG it takes a few;
#: once in a CI rehearsal a kernel stopped for good in its own driver setup,
#: before any disk was touched.  Such a guest is killed and booted again (it
#: wrote nothing; to the power-cut test it is one more cut before userspace).
USERSPACE_WITHIN = 180.0
BOOT_TRIES = 3


class VM:
    def __init__(
        self, image: Image, name: str, workdir: Path, memory: int = 1536, cpus: int = 2, net: str | None = None,
        mac: str = "52:54:00:12:34:01", rtc: str | None = None, cmdline: str = "", base: Path | None = None,
        extra: list[str] | None = None,
    ) -> None:  # fmt: skip
        self.image, self.name, self.workdir = image, name, Path(workdir)
        self.memory, self.cpus, self.net, self.mac, self.rtc, self.cmdline = memory, cpus, net, mac, rtc, cmdline
        #: The root disk the throw-away overlay stands on: the image's, or a qcow2 made from it.
        self.base = base
        #: More qemu arguments: disks, serial ports.
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.next_id = 0
        self.boot_seconds = 0.0
        #: Boots given up because the kernel hung before /init (``boot``).
        self.kernel_hangs: list[str] = []

    @property
    def overlay(self) -> Path:
        return self.workdir / f"{self.name}.qcow2"

    @property
    def console(self) -> Path:
        return self.workdir / f"{self.name}.console"

    def boot(self, timeout: float = 600) -> VM:
        """Start the guest and wait until systemd says it is up; a kernel that
        hangs before /init is killed and booted again (``USERSPACE_WITHIN``)."""
        for attempt in range(1, BOOT_TRIES + 1):
            try:
                return self._boot(timeout)
            except KernelHang as e:
                self.kill()
                self.kernel_hangs.append(str(e))
                print(f"{self.name}: boot {attempt} given up: {e}")
                if attempt == BOOT_TRIES:
                    raise
        raise AssertionError("unreachable")

    def _boot(self, timeout: float) -> VM:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.console.unlink(missing_ok=True)
        backing = ["-b", str(self.base), "-F", "qcow2"] if self.base else ["-b", str(self.image.root), "-F", "raw"]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(self.overlay)], check=True)
        agent, monitor = self.workdir / f"{self.name}.agent", self.workdir / f"{self.name}.monitor"
        for path in (agent, monitor):
            path.unlink(missing_ok=True)
        argv = [
            "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", str(self.cpus), "-m", str(self.memory),
            "-display", "none", "-no-reboot", "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", f"console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1 systemd.show_status=0 {self.cmdline}".strip(),
            "-drive", f"file={self.overlay},if=virtio,format=qcow2,cache=unsafe",
            "-device", "virtio-serial-pci", "-chardev", f"socket,id=ag,path={agent},server=on,wait=off",
            "-device", "virtserialport,chardev=ag,name=tb.agent",
            "-monitor", f"unix:{monitor},server,nowait", "-serial", f"file:{self.console}",
        ]  # fmt: skip
        if self.net:
            argv += ["-netdev", f"socket,id=n0,{self.net}", "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}"]
        else:
            argv += ["-nic", "none"]
        if self.rtc:
            argv += ["-rtc", f"base={self.rtc}"]
        argv += self.extra
        started = time.monotonic()
        log = open(self.workdir / f"{self.name}.qemu.log", "wb")  # noqa: SIM115 - qemu writes it while it runs
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        deadline = started + timeout
        while self.sock is None:
            if self.proc.poll() is not None:
                raise VMError(f"qemu exited with {self.proc.returncode}: {(self.workdir / f'{self.name}.qemu.log').read_text()[-2000:]}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(agent))
                self.sock = s
            except OSError:
                if time.monotonic() > deadline:
                    raise VMError("qemu did not create the agent socket") from None
                time.sleep(0.2)
        while "as init process" not in self.console_text():  # the kernel's "Run /init as init process"
            if self.proc.poll() is not None:
                raise VMError(f"qemu exited with {self.proc.returncode}: {self.console_tail()}")
            if time.monotonic() > started + USERSPACE_WITHIN:
                tail = self.console_tail().strip().splitlines()[-1:] or ["(nothing)"]
                raise KernelHang(f"the kernel did not start /init within {USERSPACE_WITHIN:.0f} s; console ends: {tail[0]}")
            time.sleep(0.2)
        state = self.run("systemctl is-system-running --wait", timeout=max(deadline - time.monotonic(), 1)).stdout.strip()
        self.boot_seconds = time.monotonic() - started
        if state not in ("running", "degraded"):
            raise VMError(f"{self.name} booted to state {state!r}: {self.console_tail()}")
        return self

    def console_text(self) -> str:
        try:
            return self.console.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self) -> str:
        return self.console_text()[-3000:]

    def run(self, script: str, user: str | None = None, timeout: float = 600, input: bytes = b"", check: bool = False) -> Done:
        """Run ``script`` with bash in the guest (as ``user``); waits for it."""
        assert self.sock is not None, "the VM is not running"
        self.next_id += 1
        request = {"id": self.next_id, "sh": script, "user": user, "stdin": base64.b64encode(input).decode(), "timeout": timeout}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        self.sock.settimeout(timeout + 60)
        while True:
            while b"\n" not in self.buffer:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    raise VMError(f"{self.name}: the command channel closed: {self.console_tail()}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            reply = json.loads(line)
            if reply.get("id") == self.next_id:
                break
        out, err = (base64.b64decode(reply[k]).decode(errors="replace") for k in ("out", "err"))
        done = Done(reply["rc"], out, err)
        if check and done.returncode != 0:
            raise VMError(f"{self.name}: {script!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def put(self, path: str, data: bytes, mode: str = "0644") -> None:
        self.run(f"mkdir -p \"$(dirname '{path}')\" && cat > '{path}' && chmod {mode} '{path}'", input=data, check=True)

    def close(self) -> None:
        monitor = self.workdir / f"{self.name}.monitor"
        if self.proc is not None and self.proc.poll() is None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as m:
                    m.connect(str(monitor))
                    m.sendall(b"quit\n")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.overlay.unlink(missing_ok=True)

    def shutdown(self, keep: Path | None = None, timeout: float = 300) -> None:
        """A clean power-off from inside; ``keep`` saves the root overlay there."""
        assert self.proc is not None and self.sock is not None
        self.sock.sendall(json.dumps({"id": -1, "sh": "systemctl --no-block poweroff", "stdin": "", "timeout": 60}).encode() + b"\n")
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VMError(f"{self.name} did not power off: {self.console_tail()}") from None
        self.sock.close()
        self.sock = None
        if keep is not None:
            os.replace(self.overlay, keep)

    def kill(self) -> None:
        """A power cut: the guest stops at once, nothing is flushed or cleaned."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def freeze(self) -> None:
        os.kill(self.proc.pid, 19) if self.proc else None  # SIGSTOP: the whole machine stops

    def thaw(self) -> None:
        os.kill(self.proc.pid, 18) if self.proc else None  # SIGCONT


def stop_processing(vm: VM, *also: str) -> None:
    """Stop miniq's path unit and timer (and the units ``also``), then its processor.

    Two calls: a stop job for the service queued beside its triggers' is cancelled
    ("Job for miniq-process.service canceled") when the path unit starts it meanwhile."""
    vm.run(f"systemctl stop {' '.join(also)} miniq-process.path miniq-process.timer", check=True)
    vm.run("systemctl stop miniq-process.service", check=True)
