"""Building the VM test bed's guest: Debian 12, systemd as PID 1, pure cgroup v2.

    .venv/bin/python -m tests.vm.image        # build (or find) the image; prints its directory

Everything comes from Debian's packages and this repository: the kernel is
Debian's ``linux-image-amd64`` (unpacked, never installed on the host), the
root file system is made by debootstrap from the host's own Debian mirror,
the initramfs is busybox-static with the few modules needed to mount the
root.  The result is cached in ``CACHE/vm-<recipe>`` and rebuilt only when
the recipe (this file, the agent, the package lists) changes.  A fresh
machine builds it in about 3-5 minutes (measured: see README, Development).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("MINIQ_VM_CACHE", "/var/cache/miniq-testbed"))
HOST_DEBS = ["qemu-system-x86", "qemu-utils", "debootstrap", "e2fsprogs", "busybox-static"]
GUEST_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "dbus-user-session", "libpam-systemd", "udev", "kmod", "iproute2", "procps",
    "python3", "python3-click", "python3-pystemd", "nfs-kernel-server", "nfs-common", "util-linux", "passwd", "login",
]  # fmt: skip
MASKED = [
    "systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_reap.service", "e2scrub_all.timer",
    "fstrim.timer", "man-db.timer", "dpkg-db-backup.timer", "getty@tty1.service", "serial-getty@ttyS0.service",
    "systemd-networkd-wait-online.service", "nfs-server.service", "nfs-blkmap.service",
]  # fmt: skip
INITRD_MODULES = [
    "virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk",
    "crc32c_generic", "crc16", "mbcache", "jbd2", "ext4", "virtio_console",
]  # fmt: skip


@dataclass(frozen=True)
class Image:
    directory: Path
    kernel: Path
    initrd: Path
    root: Path
    kernel_version: str


def log(message: str) -> None:
    print(f"[vm image {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sh(*args: str, **kw: object) -> str:
    proc = subprocess.run(list(args), check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    return str(proc.stdout)


def kernel_package() -> str:
    depends = sh("apt-cache", "depends", "linux-image-amd64")
    m = re.search(r"Depends: (linux-image-[0-9][^\s]*-amd64)", depends)
    if not m:
        raise RuntimeError(f"no kernel package in: {depends}")
    return m.group(1)


def mirror() -> str:
    """The Debian mirror the host's apt uses."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for uri in re.findall(r"^URIs:\s*(\S+)", path.read_text(), re.MULTILINE):
            if "security" not in uri:
                return uri
    for line in Path("/etc/apt/sources.list").read_text().splitlines() if Path("/etc/apt/sources.list").exists() else []:
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
            return parts[1]
    return "http://deb.debian.org/debian"


def recipe() -> str:
    """What the image depends on: rebuilt when any of it changes."""
    h = hashlib.sha256()
    for path in (Path(__file__), HERE / "agent.py", HERE / "tb-agent.service"):
        h.update(path.read_bytes())
    h.update(kernel_package().encode())
    return h.hexdigest()[:16]


def build(force: bool = False) -> Image:
    """The cached image for the current recipe, built if missing."""
    if os.geteuid() != 0:
        raise RuntimeError("building the VM image needs root (debootstrap)")
    subprocess.run(["bash", str(REPO / "packaging" / "need-debs.sh"), *HOST_DEBS], check=True)
    version = kernel_package().removeprefix("linux-image-")
    directory = CACHE / f"vm-{recipe()}"
    image = Image(directory, directory / "vmlinuz", directory / "initrd.img", directory / "root.img", version)
    if (directory / "complete").exists() and not force:
        return image
    shutil.rmtree(directory, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    for old in CACHE.glob("vm-*"):  # images of earlier recipes
        shutil.rmtree(old, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=CACHE))
    try:
        started = time.monotonic()
        modules = _kernel(work, version, directory)
        rootfs = _rootfs(work, modules, version)
        _initrd(work, rootfs, version, directory)
        log("making the root file system image (ext4)")
        sh("mkfs.ext4", "-q", "-F", "-L", "tbroot", "-d", str(rootfs), str(directory / "root.img"), "3G")
        (directory / "complete").write_text(f"built in {time.monotonic() - started:.0f} s\n")
        log(f"image ready in {time.monotonic() - started:.0f} s: {directory}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image


def _kernel(work: Path, version: str, directory: Path) -> Path:
    log(f"fetching linux-image-{version} from Debian")
    sh("apt-get", "download", f"linux-image-{version}", cwd=str(work))
    deb = next(work.glob("linux-image-*.deb"))
    sh("dpkg-deb", "-x", str(deb), str(work / "kernel"))
    directory.mkdir(parents=True)
    shutil.copy(work / "kernel" / "boot" / f"vmlinuz-{version}", directory / "vmlinuz")
    return work / "kernel" / "lib" / "modules" / version


def _rootfs(work: Path, modules: Path, version: str) -> Path:
    rootfs = work / "rootfs"
    log(f"debootstrap bookworm from {mirror()} (a few minutes)")
    sh("debootstrap", "--variant=minbase", "--include=" + ",".join(GUEST_PACKAGES), "bookworm", str(rootfs), mirror())
    shutil.copytree(modules, rootfs / "lib" / "modules" / version, symlinks=True)
    sh("chroot", str(rootfs), "depmod", version)
    (rootfs / "etc" / "hostname").write_text("testbed\n")
    (rootfs / "etc" / "fstab").write_text("")
    sh("chroot", str(rootfs), "passwd", "-d", "root")
    sh("chroot", str(rootfs), "systemctl", "mask", *MASKED)
    (rootfs / "var" / "log" / "journal").mkdir(parents=True, exist_ok=True)  # persistent, like a normal install
    shutil.copy(HERE / "agent.py", rootfs / "usr" / "local" / "lib" / "tb-agent.py")
    shutil.copy(HERE / "tb-agent.service", rootfs / "etc" / "systemd" / "system" / "tb-agent.service")
    sh("chroot", str(rootfs), "systemctl", "enable", "tb-agent.service")
    (rootfs / "etc" / "exports").write_text("/srv/share 10.9.0.0/16(rw,sync,no_subtree_check,no_root_squash,insecure)\n")
    (rootfs / "srv" / "share").mkdir(parents=True, exist_ok=True)
    return rootfs


INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in MODULES; do insmod /mods/$m.ko 2>/dev/null; done
for i in $(seq 1 50); do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 /dev/vda /newroot || { echo "cannot mount the root"; exec sh; }
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /lib/systemd/systemd "$@"
"""


def _initrd(work: Path, rootfs: Path, version: str, directory: Path) -> None:
    log("making the initramfs (busybox-static and the modules for virtio and ext4)")
    initrd = work / "initrd"
    for d in ("bin", "proc", "sys", "dev", "newroot", "mods"):
        (initrd / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", initrd / "bin" / "busybox")
    moddir = rootfs / "lib" / "modules" / version
    for name in INITRD_MODULES:
        found = list(moddir.rglob(f"{name}.ko")) + list(moddir.rglob(f"{name}.ko.xz"))
        if not found:
            continue  # built into the kernel
        target = initrd / "mods" / f"{name}.ko"
        if found[0].suffix == ".xz":
            target.write_bytes(subprocess.run(["xz", "-dc", str(found[0])], check=True, capture_output=True).stdout)
        else:
            shutil.copy(found[0], target)
    (initrd / "init").write_text(INIT.replace("MODULES", " ".join(INITRD_MODULES)))
    (initrd / "init").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=initrd, check=True, capture_output=True).stdout
    cpio = subprocess.run(["busybox", "cpio", "-o", "-H", "newc"], cwd=initrd, input=files, check=True, capture_output=True).stdout
    (directory / "initrd.img").write_bytes(subprocess.run(["gzip", "-1"], input=cpio, check=True, capture_output=True).stdout)


if __name__ == "__main__":
    print(build(force="--force" in sys.argv).directory)
