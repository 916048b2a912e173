"""Fixtures of the VM test bed: the cached guest image, the .deb, guests.

Tests here are marked ``vm``: ``bash tests/run -m vm`` runs only them.  They
need root (to build the image) and qemu; outside CI they are skipped with
the reason when that is missing, in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .image import Image, build
from .machine import VM


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


def require_vm() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "the VM test bed needs root"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the VM tests, but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def image() -> Image:
    require_vm()
    started = time.monotonic()
    found = build()
    from conftest import REPORT

    REPORT.append(f"VM image: {found.directory} ({time.monotonic() - started:.0f} s to build or find it)")
    assert shutil.which("qemu-system-x86_64"), "qemu is missing after the image build"
    return found


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian package of this checkout (packaging/build-deb.sh)."""
    from conftest import build_deb

    return build_deb()


def boot(image: Image, workdir: Path, name: str, **kw: object) -> VM:
    vm = VM(image, name, workdir, **kw)  # type: ignore[arg-type]
    vm.boot()
    from conftest import REPORT

    hangs = f" after {len(vm.kernel_hangs)} boot(s) whose kernel hung before /init" if vm.kernel_hangs else ""
    REPORT.append(f"VM guest {name} booted in {vm.boot_seconds:.1f} s (TCG){hangs}")
    return vm


def install_miniq(vm: VM, deb: Path) -> None:
    vm.put("/tmp/miniq.deb", deb.read_bytes())
    vm.run("dpkg -i /tmp/miniq.deb", check=True, timeout=300)


@pytest.fixture(scope="module")
def guest(image: Image, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VM]:
    vm = boot(image, tmp_path_factory.mktemp("vm"), "guest")
    try:
        install_miniq(vm, deb)
        yield vm
    finally:
        vm.close()
