"""Man pages and shell completion come from the click definitions."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from miniq.cli.main import main
from miniq.cli.manpage import pages, write

VISIBLE = [name for name, command in main.commands.items() if not command.hidden and name != "status"]


def test_a_page_for_miniq_and_each_command() -> None:
    found = pages()
    assert set(found) == {"miniq.1", *(f"miniq-{name}.1" for name in VISIBLE)}
    for name in VISIBLE:
        text = found[f"miniq-{name}.1"]
        for param in main.commands[name].params:
            if isinstance(param, click.Option):
                assert param.opts[0].replace("-", "\\-") in text, (name, param.opts)
    assert all(f"\\fB{name}\\fR" in found["miniq.1"] for name in VISIBLE)


def test_pages_render_without_warnings(tmp_path: Path) -> None:
    for path in write(tmp_path):
        proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(path)], capture_output=True, text=True)
        assert (proc.returncode, proc.stderr) == (0, ""), path.name


def test_bash_completion() -> None:
    env = dict(os.environ, _MINIQ_COMPLETE="bash_complete", COMP_WORDS="miniq enq", COMP_CWORD="1")
    out = subprocess.run([sys.executable, "-m", "miniq"], env=env, capture_output=True, text=True).stdout
    assert out.strip() == "plain,enqueue"
    env = dict(os.environ, _MINIQ_COMPLETE="bash_source")
    source = subprocess.run([sys.executable, "-m", "miniq"], env=env, capture_output=True, text=True)
    assert "complete -o nosort -F _miniq_completion miniq" in source.stdout


def test_name_lines_read_like_whatis() -> None:
    """NAME is "page \\- summary": the summary does not repeat the page's name."""
    found = pages()
    assert found["miniq.1"].split(".SH NAME\n")[1].splitlines()[0] == "miniq \\- a daemonless job queue run by systemd"
    assert found["miniq-enqueue.1"].split(".SH NAME\n")[1].splitlines()[0].startswith("miniq\\-enqueue \\- Queue a run of")
