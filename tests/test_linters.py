"""Linters run as tests, so CI and a newcomer run the same checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import import_graph
import pytest

from miniq.core.manager import Manager
from miniq.systemd.units import miniq_command, render, units_for

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> None:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff() -> None:
    run(str(BIN / "ruff"), "check", "miniq", "tests")


def test_ruff_format() -> None:
    run(str(BIN / "ruff"), "format", "--check", "miniq")


def test_mypy_strict() -> None:
    run(str(BIN / "mypy"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_rendered_units_verify(tmp_path: Path) -> None:
    """What install-units writes passes systemd-analyze verify.

    The shipped files (ExecStart=/usr/bin/miniq) are verified as they are in
    the sandbox, for the system and a user manager (tests/integration).
    """
    units = units_for(Manager.SYSTEM)
    for name in units:
        (tmp_path / name).write_text(render(name, miniq_command(), str(tmp_path / "root")))
    run("systemd-analyze", "verify", "--man=no", *(str(tmp_path / n) for n in units))


def test_functions_are_short_and_modules_small() -> None:
    """Code shape: no function of miniq longer than 50 lines, no module past ~500."""
    import ast

    long = []
    for path in sorted((REPO / "miniq").rglob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) <= 520, f"{path.name} is {len(source.splitlines())} lines: split it"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:  # type: ignore[operator]
                long.append(f"{path.name}:{node.name}")
    assert long == []


def test_no_circle_and_no_wing_imports_a_higher_one() -> None:
    """Wings, not knots (README, "Code layout"; tests/import_graph.py prints the
    graph): every module is in a wing, a wing imports only from itself and lower
    ones, and no module imports one that imports it back, even lazily or for
    type checkers only."""
    g = import_graph.graph()
    assert {m for m in g if import_graph.wing_of(m) is None} == {"__init__", "__main__"}
    assert import_graph.circles(g) == []
    order = import_graph.WINGS
    up = {f"{a} -> {b}": why for (a, b), why in import_graph.wing_arrows(g).items() if order.index(b) > order.index(a)}
    assert up == {}


def test_the_import_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The check above cannot be dodged by a deferred import, a type checker's
    import or the package's own name."""
    known = {"core.files", "core.job", "store.queue", "run.processor", "cli.main", "__init__"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ..core import files\n"
        "if TYPE_CHECKING:\n    from ..run.processor import Processor\n"
        "def f():\n    from ..cli.main import main\n    import miniq.core.job\n"
        "def g():\n    from .. import __version__\n"
    )
    (tmp_path / "queue.py").write_text(source)
    found = import_graph.imports("store.queue", tmp_path / "queue.py", known)
    assert found == {"core.files", "run.processor", "cli.main", "core.job", "__init__"}
    assert import_graph.circles({"a.x": {"a.y"}, "a.y": {"a.x"}}) == [["a.x", "a.y"]]
    assert import_graph.wing_arrows({"core.x": {"cli.y"}, "cli.y": set()}) == {("core", "cli"): ["core.x -> cli.y"]}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_helper_is_sandboxed(tmp_path: Path) -> None:
    """miniq-api.service is root and every local user reaches it: systemd's own
    exposure score must stay at 4.5 or below ("OK"; 0.2's helper scored 9.6)."""
    unit = tmp_path / "miniq-api.service"
    unit.write_text((REPO / "units" / "miniq-api.service").read_text())
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=45", "--no-pager", str(unit)], capture_output=True, text=True
    )
    score = float(proc.stdout.rsplit("Overall exposure level for miniq-api.service: ", 1)[1].split()[0])
    print(f"systemd-analyze security miniq-api.service: {score}")
    assert proc.returncode == 0 and score <= 4.5, proc.stdout[-3000:]
