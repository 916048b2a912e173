"""Man pages built from the click definitions: ``miniq(1)`` and one per command.

    python3 -m miniq.cli.manpage DIR     # writes DIR/miniq.1 and DIR/miniq-COMMAND.1

The Debian package builds them (packaging/debian/rules), so the pages say
exactly what ``--help`` says.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.face import say
from ..core.version import __version__
from .main import main

DATE = "2026-12-01"


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    out = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        out += [".TP", f"\\fB{_escape(names)}\\fR", _escape(text)]
    return out


def page(name: str, command: click.Command, parent: click.Context | None = None) -> str:
    """The roff source of one page."""
    ctx = click.Context(command, info_name=name, parent=parent)
    title = name.replace(" ", "-")
    help_text = (command.help or "").strip()
    summary, _, rest = help_text.partition("\n")
    summary = summary.removeprefix(f"{name}: ")  # "miniq: a daemonless..." reads "miniq - a daemonless..."
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [
        f'.TH {title.upper()} 1 "{DATE}" "miniq {__version__}" "User Commands"',
        ".SH NAME",
        f"{_escape(title)} \\- {_escape(summary.rstrip('.'))}",
        ".SH SYNOPSIS",
        f"\\fB{_escape(name)}\\fR {_escape(usage)}",
        ".SH DESCRIPTION",
    ]
    for paragraph in [p.strip() for p in rest.split("\n\n") if p.strip()] or [summary]:
        lines += [_escape(" ".join(paragraph.split())), ".PP"]
    lines += [".SH OPTIONS", *_options(command, ctx)]
    if isinstance(command, click.Group):
        lines.append(".SH COMMANDS")
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is None or sub.hidden:
                continue
            lines += [".TP", f"\\fB{sub_name}\\fR", _escape(sub.get_short_help_str(80)), f"See \\fBminiq\\-{sub_name}\\fR(1)."]
        lines += [
            ".SH FILES",
            ".TP",
            "\\fI/var/lib/miniq\\fR",
            "The system queue.",
            ".TP",
            "\\fI~/.local/state/miniq\\fR",
            "A user's queue.",
        ]
    lines += [".SH SEE ALSO", "\\fBsystemd.unit\\fR(5), \\fBsystemd.path\\fR(5), \\fBsystemd.timer\\fR(5), \\fBjournalctl\\fR(1)"]
    return "\n".join(lines) + "\n"


def pages() -> dict[str, str]:
    """File name -> roff source of every page."""
    ctx = click.Context(main, info_name="miniq")
    found = {"miniq.1": page("miniq", main)}
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        if command is not None and not command.hidden:
            found[f"miniq-{name}.1"] = page(f"miniq {name}", command, ctx)
    return found


def write(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages().items():
        (target / name).write_text(text)
        written.append(target / name)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        say(str(path))
