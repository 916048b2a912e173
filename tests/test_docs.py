"""Docs can't drift: every command has help with an example and is in README;
README's tables of limits, exit codes and modules match the code."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from miniq.cli import main
from miniq.config import PROCESSOR_OPTIONS
from miniq.limits import LIMITS

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
    from miniq import errors
    from miniq.result import WAIT_GAVE_UP

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


def test_readme_code_layout_lists_every_module() -> None:
    section = README.split("### Code layout")[1].split("\n## ")[0]
    listed = set(re.findall(r"^- `miniq/(\w+)\.py`", section, re.MULTILINE))
    actual = {p.stem for p in (REPO / "miniq").glob("*.py")}
    assert listed == actual


def test_readme_shows_every_access_policy() -> None:
    from miniq.config import POLICY

    example = README.split("Policy in `/etc/miniq/miniq.conf`")[1].split("```ini")[1].split("```")[0]
    for key in POLICY:
        assert re.search(rf"^{key} = ", example, re.MULTILINE), key


def test_readme_names_every_cap() -> None:
    from miniq.config import CAPS

    for cap in CAPS:
        assert f"`{cap}`" in README, cap
    assert "SECURITY.md" in README and (REPO / "SECURITY.md").is_file()
