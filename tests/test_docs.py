"""Docs can't drift: every command has help with an example and is in README;
README's tables of limits, exit codes and modules match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from miniq.cli.main import main
from miniq.core.limits import LIMITS
from miniq.store.config import PROCESSOR_OPTIONS

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
COMMANDS = sorted(main.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help_with_example(name: str) -> None:
    command = main.commands[name]
    assert command.help, f"{name} has no help"
    assert "Example: " in command.help, f"{name}'s help has no example"


@pytest.mark.parametrize("name", COMMANDS)
def test_command_is_in_readme(name: str) -> None:
    assert f"miniq {name}" in README or f"{name}`" in README, f"README.md does not mention `{name}`"


def test_exit_codes_documented() -> None:
    from miniq.core import errors
    from miniq.core.result import WAIT_GAVE_UP

    classes = [errors.MiniqError, *errors.MiniqError.__subclasses__(), *errors.BadInput.__subclasses__()]
    assert errors.Busy in classes
    for cls in classes:
        assert f"| {cls.exit_code} |" in README, f"exit code {cls.exit_code} is not in README's table"
    assert f"| {WAIT_GAVE_UP} |" in README


def test_every_option_has_help() -> None:
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help"


def test_readme_limits_table_matches_the_declarations() -> None:
    table = README.split("| option | systemd property | example |")[1].split("\n\n")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.strip().splitlines()[1:]]
    assert rows == [[f"`--{s.key}`", s.systemd, s.example] for s in LIMITS]


def test_readme_lists_every_processor_option() -> None:
    for option, default in PROCESSOR_OPTIONS.items():
        assert re.search(rf"^{re.escape(option)} = {re.escape(default)}$", README, re.MULTILINE), option


def test_readme_code_layout_names_every_wing_and_module() -> None:
    """One paragraph per wing, naming each of its modules, in the wings' order."""
    import import_graph

    section = README.split("### Code layout")[1].split("\nBenchmarks print figures")[0]
    paragraphs = re.findall(r"^- `miniq/(\w+)/` — (.*?)(?=^- |\Z)", section, re.MULTILINE | re.DOTALL)
    assert [wing for wing, _ in paragraphs] == list(import_graph.WINGS)
    for wing, text in paragraphs:
        listed = set(re.findall(r"`(\w+)`\s+\(", text))
        actual = {p.stem for p in (REPO / "miniq" / wing).glob("*.py")} - {"__init__"}
        assert listed == actual, wing
    assert {p.name for p in (REPO / "miniq").glob("*.py")} == {"__init__.py", "__main__.py"}
    assert set(import_graph.WINGS) == {p.name for p in (REPO / "miniq").iterdir() if (p / "__init__.py").is_file()}


def test_the_public_face_is_whole_and_lazy() -> None:
    """``miniq`` names the library (README): every name resolves, type checkers
    see the same list, and importing the package loads no wing."""
    import ast

    import miniq

    tree = ast.parse((REPO / "miniq" / "__init__.py").read_text())
    checked = next(n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))
    typed = {a.asname or a.name for n in checked.body if isinstance(n, ast.ImportFrom) for a in n.names} - {"Any"}
    assert typed == set(miniq._FACE)
    for name, module in miniq._FACE.items():
        assert getattr(miniq, name).__module__ == f"miniq.{module}", name
    loaded = "sorted(m for m in sys.modules if m.startswith('miniq.') and m not in ('miniq.core', 'miniq.core.version'))"
    code = f"import sys, miniq; print({loaded})"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_every_path_of_the_code_the_docs_name_exists() -> None:
    for doc in ("README.md", "SECURITY.md", "NEWS.md"):
        text = (REPO / doc).read_text()
        if doc == "NEWS.md":
            text = text.split("\n## ", 2)[1]  # the release being made; older ones name the old layout
        for path in re.findall(r"`(miniq/[\w/]+\.py)`", text):
            assert (REPO / path).is_file(), f"{doc}: {path}"
        for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):  # the screenshots
            assert (REPO / path).is_file(), f"{doc}: {path}"


def test_one_version_everywhere() -> None:
    from miniq import __version__

    assert f'version = "{__version__}"' in (REPO / "pyproject.toml").read_text()
    assert (REPO / "packaging" / "debian" / "changelog").read_text().startswith(f"miniq ({__version__})")


def test_readme_shows_every_access_policy() -> None:
    from miniq.store.config import POLICY

    example = README.split("Policy in `/etc/miniq/miniq.conf`")[1].split("```ini")[1].split("```")[0]
    for key in POLICY:
        assert re.search(rf"^{key} = ", example, re.MULTILINE), key


def test_readme_names_every_cap() -> None:
    from miniq.store.config import CAPS

    for cap in CAPS:
        assert f"`{cap}`" in README, cap
    assert "SECURITY.md" in README and (REPO / "SECURITY.md").is_file()
