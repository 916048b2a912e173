"""Linters run as tests, so CI and a newcomer run the same checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miniq.manager import Manager
from miniq.units import miniq_command, render, units_for

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
    for path in sorted((REPO / "miniq").glob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) <= 520, f"{path.name} is {len(source.splitlines())} lines: split it"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 50:  # type: ignore[operator]
                long.append(f"{path.name}:{node.name}")
    assert long == []


def _imports(path: Path) -> set[str]:
    """miniq modules ``path`` imports when it runs (``if TYPE_CHECKING`` blocks aside)."""
    import ast

    found = set()
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skip or not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        if node.module:
            found.add(node.module.split(".")[0])
        else:
            found |= {alias.name for alias in node.names}
    return found


def test_no_import_cycles() -> None:
    """Layers, not knots: no miniq module imports, even lazily, one that imports it
    back.  (The system queue's helper gets the CLI's command handed in.)"""
    graph = {p.stem: _imports(p) & {q.stem for q in (REPO / "miniq").glob("*.py")} for p in (REPO / "miniq").glob("*.py")}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and nxt > path[0]:
                visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []


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
