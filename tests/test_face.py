"""The one face (face.py): a user's control characters never reach a person raw.

Three checks: what ``visible`` makes of every kind of control character; that
no module but face.py writes to standard output or error (so a new command
cannot print around it); and every command that shows a user's text, run on
a queue holding hostile text, in a pipe and on a terminal (a pty), prints no
control character but line ends.  The same against a real systemd, alice
against root, is tests/integration/test_secure_by_construction.py.
"""

from __future__ import annotations

import ast
import json
import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import modules, write_job

from miniq.cli.main import main
from miniq.core.face import visible, visible_lines
from miniq.core.job import Job
from miniq.core.result import Outcome, Result
from miniq.store.queue import Queue

HOSTILE = "a\rb\x1b[2K\x1b[1A\x07\x9b31m\u202eevil\u2028x\udcff\x01z"
#: Bytes that must never reach a person: C0 controls but line end, DEL, and C1 controls as UTF-8.
RAW = [bytes([c]) for c in (*range(0x09), *range(0x0B, 0x20), 0x7F)] + [bytes([0xC2, c]) for c in range(0x80, 0xA0)]
RAW += ["\u202e".encode(), "\u2028".encode()]


def raw_in(data: bytes) -> list[bytes]:
    return [r for r in RAW if r in data]


def test_every_kind_of_control_character_is_made_visible() -> None:
    assert visible("a\rb\x1b[2K\x07\x7f") == "a\\rb\\x1b[2K\\x07\\x7f"
    assert visible("x\ny\tz") == "x\\ny\\tz"
    assert visible_lines("x\ny\tz\r") == "x\ny\tz\\r"
    assert visible("\x9b\x85") == "\\u009b\\u0085"
    assert visible("\u202eevil\u2066\u200f\u2028") == "\\u202eevil\\u2066\\u200f\\u2028"
    assert visible("\udcff\ud800") == "\\xff\\ud800"
    assert visible("plain text, ünïcödé, 漢字 and a \\ backslash") == "plain text, ünïcödé, 漢字 and a \\ backslash"


# -- nothing prints around the face -------------------------------------------------

#: Writers to standard output or error allowed outside face.py, and why.
ALLOWED = {
    ("serve.helper", "_relay"): "passes on the helper's frames, which its face made",
}


def _writes(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of every print, click.echo and write to sys.stdout/sys.stderr."""
    found = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, (ast.FunctionDef, ast.ClassDef)) else scope
            if isinstance(child, ast.Call):
                src = ast.unparse(child.func)
                stream = src.startswith(("sys.stdout", "sys.stderr", "sys.__stderr__", "sys.__stdout__"))
                if src in ("print", "click.echo", "click.secho") or (stream and src.endswith((".write", ".writelines"))):
                    found.append((scope, child.lineno))
                if src.endswith("sinks.get") or (src.startswith("sink") and src.endswith(".write")):
                    found.append((scope, child.lineno))
            visit(child, name)

    visit(tree, "")
    return found


def test_no_module_but_the_face_writes_to_standard_output_or_error() -> None:
    offenders = []
    for module, path in modules().items():
        if module == "core.face":
            continue
        for scope, line in _writes(ast.parse(path.read_text())):
            if (module, scope) not in ALLOWED:
                offenders.append(f"{module}:{line} ({scope})")
    assert not offenders, f"print through miniq.core.face (say, say_lines, say_bytes, say_json) instead: {offenders}"


# -- every command, in a pipe and on a terminal --------------------------------------


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A queue whose jobs, records and files carry control characters everywhere a user can put them."""
    root = tmp_path / "root"
    write_job(root, "echo", '#!/bin/sh\nprintf "%s\\n" "$@"\n')
    q = Queue(root)
    queued = q.enqueue("echo", [HOSTILE, "second"])
    failed = Job.new("echo", [HOSTILE])
    result = Result.unrun(Outcome.NOT_STARTED, f"because {HOSTILE}", f"host{HOSTILE}")
    q.ensure_layout()
    (root / "failed" / f"{failed.id}.json").write_text(json.dumps(failed.but(attempts=(result,)).record(result, failed_state())))
    (root / "ids").write_text(f"{queued.id} {failed.id}")
    return root


def failed_state():  # type: ignore[no-untyped-def]
    from miniq.core.job import State

    return State.FAILED


COMMANDS = [
    ["list"],
    ["list", "--all"],
    ["show", "{queued}"],
    ["show", "{failed}"],
    ["stats"],
    ["enqueue", "--memory-max", HOSTILE, "echo"],
    ["enqueue", "--in", HOSTILE, "echo"],
    ["enqueue", "--at", HOSTILE, "echo"],
    ["enqueue", "--unique-key", HOSTILE, "echo"],
    ["enqueue", "--after", HOSTILE, "echo"],
    ["show", HOSTILE],
    ["wait", "--timeout", HOSTILE, "{queued}"],
    ["purge", "--older-than", HOSTILE],
    ["every", HOSTILE, "echo"],
    ["cancel", HOSTILE],
]


def _args(root: Path, command: list[str]) -> list[str]:
    queued, failed = (root / "ids").read_text().split()
    return [a.format(queued=queued, failed=failed) if a.startswith("{") else a for a in command]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c)[:40].encode("unicode_escape").decode())
def test_no_command_prints_a_raw_control_character_in_a_pipe(hostile: Path, command: list[str]) -> None:
    result = CliRunner().invoke(main, ["--root", str(hostile), *_args(hostile, command)])
    assert result.exit_code in (0, 2, 3, 5, 75), (result.exit_code, result.output, result.exception)
    data = result.stdout_bytes + result.stderr_bytes
    assert data.strip(), "the command printed nothing: the check would be empty"
    assert "internal error" not in result.output
    assert raw_in(data) == [], data


@pytest.mark.parametrize("command", [["list"], ["show", "{failed}"], ["enqueue", "--in", HOSTILE, "echo"]], ids=str)
def test_no_command_prints_a_raw_control_character_on_a_terminal(hostile: Path, command: list[str]) -> None:
    """A real command line whose output is a terminal (a pty), as a person runs it."""
    leader, follower = pty.openpty()
    args = [sys.executable, "-m", "miniq", "--root", str(hostile), *_args(hostile, command)]
    proc = subprocess.Popen([os.fsencode(a) for a in args], stdout=follower, stderr=follower, stdin=subprocess.DEVNULL)
    os.close(follower)
    data = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other end closed
            break
        if not chunk:
            break
        data += chunk
    proc.wait(timeout=30)
    os.close(leader)
    assert data.strip()
    # The terminal turns "\n" into "\r\n": that one pair is the terminal's, not the user's.
    assert raw_in(data.replace(b"\r\n", b"\n")) == [], data
