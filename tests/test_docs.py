"""Docs can't drift: every command has help with an example and is in README."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from miniq.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
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

    for cls in (errors.MiniqError, errors.BadInput, errors.UnknownJob, errors.SystemdUnavailable):
        assert f"| {cls.exit_code} |" in README, f"exit code {cls.exit_code} is not in README's table"


def test_every_option_has_help() -> None:
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{name} {param.opts} has no help"
