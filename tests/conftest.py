"""Shared fixtures: a queue root on real files, and the systemd test bed.

Integration tests (marked ``systemd``) need root and a bootable sandbox.
Outside CI they are skipped with the reason when that is not available; in
CI (``CI=true``) they fail instead, so a green CI run always includes them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers import write_job  # noqa: E402,F401 - re-exported for the tests
from testbed.sandbox import Sandbox  # noqa: E402


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    write_job(r, "echo", '#!/bin/sh\nprintf "%s\\n" "$@"\n')
    return r


def _testbed_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the systemd test bed needs root"
    for tool in ("unshare", "nsenter", "runuser", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists("/lib/systemd/systemd"):
        return "systemd is not installed"
    return None


def require_testbed() -> None:
    reason = _testbed_unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the systemd integration tests, but {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels of miniq and its dependencies: the sandbox has no network."""
    require_testbed()
    target = tmp_path_factory.mktemp("wheelhouse")
    target.chmod(0o755)  # read by the sandbox's unprivileged users
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(target),
            str(REPO),
            "hatchling",
        ],
        check=True,
    )
    return target


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path, request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    """A booted systemd; torn down after the module, also when tests fail."""
    require_testbed()
    work = tmp_path_factory.mktemp("sandbox")
    sb = Sandbox(work / "scratch", request.module.__name__.rsplit(".", 1)[-1], binds=[REPO, wheelhouse])
    sb.boot()
    sb.wheelhouse = wheelhouse  # type: ignore[attr-defined]
    try:
        yield sb
    finally:
        sb.close()


@pytest.fixture(scope="session")
def repo() -> str:
    return str(REPO)


def build_deb() -> Path:
    """Build the .deb of this checkout once per session (packaging/build-deb.sh)."""
    global _deb
    if _deb is None:
        proc = subprocess.run(["bash", str(REPO / "packaging" / "build-deb.sh")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        print(proc.stdout + proc.stderr)
        _deb = (Path(proc.stdout.split("built ", 1)[1].split()[0]), proc.stdout + proc.stderr)
    return _deb[0]


def page_deb() -> Path:
    """The Cockpit page's package, built with miniq's (build-deb.sh prints both)."""
    build_deb()
    assert _deb is not None
    lines = [line.split("built ", 1)[1].strip() for line in _deb[1].splitlines() if line.startswith("built ") and "cockpit-miniq_" in line]
    assert lines, _deb[1]
    return Path(lines[0])


def deb_build_output() -> str:
    build_deb()
    assert _deb is not None
    return _deb[1]


_deb: tuple[Path, str] | None = None


def lintian_tags(deb: Path) -> tuple[list[str], str]:
    """lintian --pedantic of ``deb``, info tags too: the tags it gave (none is clean), and its output."""
    lint = subprocess.run(["lintian", "--pedantic", "-I", "-E", "--color", "never", str(deb)], capture_output=True, text=True)
    return [line for line in lint.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:", "X:")], lint.stdout


def fetch_dependencies(*debs: Path) -> None:
    """The sandbox has no network: fetch what ``debs`` depend on into the host's
    apt cache (which the sandbox's overlay sees) without installing them."""
    fetch = subprocess.run(["apt-get", "install", "--download-only", "-y", *map(str, debs)], capture_output=True, text=True)
    assert fetch.returncode == 0, fetch.stdout + fetch.stderr


def package_sandbox(scratch: Path, name: str, debs: list[Path]) -> Sandbox:
    """A booted sandbox systemd that sees ``debs`` and lets maintainer scripts
    start services: this machine's image carries Docker's policy-rc.d, which
    forbids it, and a Debian system has none (gone in the sandbox's overlay only)."""
    require_testbed()
    extra = [d.parent for d in debs if not d.parent.is_relative_to(REPO)]
    sb = Sandbox(scratch, name, binds=[REPO, *extra])
    sb.boot()
    try:
        sb.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
    except BaseException:
        sb.close()
        raise
    return sb

#: The previous release, 0.2.0, as it landed: upgrade tests build its .deb from this commit.
PREVIOUS_RELEASE = ("0.2.0", "3b6875d")
_previous: Path | None = None


def build_previous_deb(workdir: Path) -> Path:
    """The .deb of the previous release, built from its commit with its own script.

    Needs the repository's history (a full clone, as CI makes): a missing
    commit fails the test with that reason, it never skips."""
    global _previous
    if _previous is None:
        version, commit = PREVIOUS_RELEASE
        source = workdir / f"miniq-{version}"
        found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"], capture_output=True)
        assert found.returncode == 0, f"commit {commit} of miniq {version} is not in this clone; upgrade tests need the history"
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], check=True, capture_output=True).stdout
        source.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
        proc = subprocess.run(["bash", str(source / "packaging" / "build-deb.sh")], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        _previous = Path(proc.stdout.split("built ", 1)[1].split()[0])
        assert _previous.name == f"miniq_{version}_all.deb", _previous
    return _previous


# -- phase times (CI prints them: unit, systemd sandbox, VM) --------------------

PHASES: dict[str, list[float]] = {}
#: Facts tests want printed at the end (VM boot times, image build).
REPORT: list[str] = []


def _phase(item: pytest.Item) -> str:
    if item.get_closest_marker("vm"):
        return "vm test bed"
    if item.get_closest_marker("nemesis"):
        return "nemesis"
    if item.get_closest_marker("systemd"):
        return "systemd sandbox"
    return "unit tests and linters"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    import time

    start = time.monotonic()
    yield
    span = PHASES.setdefault(_phase(item), [start, start])
    span[0], span[1] = min(span[0], start), max(span[1], time.monotonic())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not PHASES:
        return
    terminalreporter.section("phases")
    for name, (start, end) in PHASES.items():
        terminalreporter.write_line(f"{name}: {end - start:.0f} s")
    for line in REPORT:
        terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report on its test (``item.rep_call``): fixtures that keep
    evidence of a failure (the browser tests' screenshots) look at it."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
