"""piuparts, Debian's own installation checker, on the package of this checkout.

Two runs against bookworm (a chroot made by debootstrap from the host's
Debian mirror):

1. A baseline: a package with miniq's dependencies and nothing else, so the
   files systemd's own scripts leave after a purge are known (the test
   prints them).  They are the only files the second run may leave.
2. miniq: install, remove and install again (config-files-remaining state),
   purge.
3. miniq: since apt finds the previous release (0.2.0, built from its
   commit) in a local repository, install that, upgrade to this one in place
   (without ``--install-remove-install``, which would remove 0.2.0 before
   installing this one), purge.
4. cockpit-miniq with miniq (and Cockpit's bridge from the mirror): install,
   remove and install again, purge.

Any file left beyond the baseline's fails them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.systemd


def _mirror() -> str:
    from vm.image import mirror

    return mirror()


def _leftovers(log: str) -> set[str]:
    found: set[str] = set()
    for block in re.findall(r"Package purging left files on system:\n((?:  .*\n)+)", log):
        found |= {line.split("\t")[0].strip() for line in block.splitlines() if line.strip()}
    return found


def _baseline_deb(new: Path, page: Path, work: Path) -> Path:
    """Both packages' dependencies but miniq itself."""
    depends = subprocess.run(["dpkg-deb", "-f", str(new), "Depends"], check=True, capture_output=True, text=True).stdout.strip()
    for dep in subprocess.run(["dpkg-deb", "-f", str(page), "Depends"], check=True, capture_output=True, text=True).stdout.split(","):
        if dep.strip() and not dep.strip().startswith("miniq"):
            depends += ", " + dep.strip()
    tree = work / "baseline"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        "Package: miniq-piuparts-baseline\nVersion: 1.0\nArchitecture: all\nMaintainer: miniq tests <tests@example.org>\n"
        f"Depends: {depends}\nDescription: miniq's dependencies alone\n piuparts baseline for miniq's tests.\n"
    )
    deb = work / "miniq-piuparts-baseline_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


def _piuparts(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["piuparts", "-d", "bookworm", "-m", _mirror(), "--tmpdir", str(work), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1800)


def test_piuparts_install_remove_reinstall_purge_and_upgrade(tmp_path_factory: pytest.TempPathFactory) -> None:
    from conftest import build_deb, build_previous_deb, page_deb, require_testbed

    require_testbed()
    subprocess.run(["bash", "packaging/need-debs.sh", "piuparts", "dpkg-dev"], check=True, cwd=Path(__file__).parents[2])
    work = tmp_path_factory.mktemp("piuparts")
    new, page, old = build_deb(), page_deb(), build_previous_deb(work / "previous")
    base = work / "base.tgz"

    baseline = _piuparts(work, "--install-remove-install", "--warn-on-leftovers-after-purge", "--save", str(base),
                         str(_baseline_deb(new, page, work)))  # fmt: skip
    assert baseline.returncode == 0, baseline.stdout[-4000:]
    allowed = sorted(_leftovers(baseline.stdout))
    print(f"what systemd and the other dependencies leave after a purge (baseline): {allowed}")

    repo = Path("/srv/miniq-piuparts-repo")  # the same path in the chroot (bind mount)
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    try:
        shutil.copy(old, repo)
        packages = subprocess.run(["dpkg-scanpackages", ".", "/dev/null"], cwd=repo, check=True, capture_output=True, text=True).stdout
        (repo / "Packages").write_text(packages)
        ignores = [f"--ignore={path}" for path in allowed]
        repo_args = ["--extra-repo", f"deb [trusted=yes] file://{repo} ./", "--bindmount", str(repo)]
        run = _piuparts(work, "-b", str(base), "--install-remove-install", "--no-upgrade-test", *ignores, str(new))
        upgrade = _piuparts(work, "-b", str(base), *repo_args, "--no-install-purge-test", *ignores, str(new))
        both = _piuparts(work, "-b", str(base), "--install-remove-install", "--no-upgrade-test", *ignores, str(new), str(page))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    verdicts = re.findall(r"INFO: (PASS: .*|FAIL: .*)", run.stdout + upgrade.stdout + both.stdout)
    print("piuparts verdicts:", verdicts)
    assert run.returncode == 0, run.stdout[-6000:]
    assert upgrade.returncode == 0, upgrade.stdout[-6000:]
    assert both.returncode == 0, both.stdout[-6000:]
    assert verdicts.count("PASS: Installation and purging test.") == 2, verdicts
    assert "cockpit-miniq" in both.stdout and _leftovers(both.stdout) == set()
    assert "PASS: Installation and purging test." in verdicts
    assert "PASS: Installation, upgrade and purging tests." in verdicts, "no upgrade from 0.2.0 was tested"
    assert "apt-cache knows about the following packages: miniq" in upgrade.stdout
    # In place: 0.2.0 was never removed before this version was installed over it.
    upgraded = upgrade.stdout.split("apt-cache knows about the following packages: miniq", 1)[1]
    assert "Removing miniq (0.2.0)" not in upgraded, upgraded[-4000:]
    assert _leftovers(run.stdout) == set() and _leftovers(upgrade.stdout) == set()
