"""Bulk enqueue (--stdin, --stdin-json) and enqueue --wait, on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner
from helpers import process, write_job

from miniq.cli.main import main
from miniq.core.job import State
from miniq.store.queue import Queue

REPO = Path(__file__).resolve().parent.parent


def invoke(root: Path, text: str, *args: str) -> object:
    return CliRunner().invoke(main, ["--root", str(root), "enqueue", *args], input=text)


def queued(root: Path) -> list[str]:
    return sorted(os.listdir(root / "queue")) if (root / "queue").exists() else []


def test_one_job_per_line_in_shell_quoting_in_order(root: Path) -> None:
    lines = ['a \'b c\' "d\\"e"', "", "# a comment", "   ", "single", *(f"n {i}" for i in range(100))]
    out = invoke(root, "\n".join(lines) + "\n", "--stdin", "echo")
    assert out.exit_code == 0, out.output  # type: ignore[attr-defined]
    ids = out.stdout.split()  # type: ignore[attr-defined]
    assert len(ids) == 102 and ids == sorted(ids)
    q = Queue(root)
    assert q.read(ids[0]).job.argv == ("a", "b c", 'd"e')  # type: ignore[union-attr]
    assert q.read(ids[1]).job.argv == ("single",)  # type: ignore[union-attr]
    assert q.read(ids[-1]).job.argv == ("n", "99")  # type: ignore[union-attr]
    assert [n for n in os.listdir(root / "tmp")] == [], "no staging file is left"
    _, summary = process(root)
    assert summary.succeeded == ids


def test_a_bad_line_refuses_the_whole_batch(root: Path) -> None:
    out = invoke(root, "a\nb\nc 'unterminated\nd\n", "--stdin", "echo")
    assert out.exit_code == 2  # type: ignore[attr-defined]
    assert out.output == "Error: line 3: No closing quotation; nothing was queued\n"  # type: ignore[attr-defined]
    assert queued(root) == []
    big = "x" * (128 * 1024)
    out = invoke(root, f"a\n{big}\n", "--stdin", "echo")
    assert out.exit_code == 2 and "Error: job 2: argument 1 is 131072 bytes" in out.output  # type: ignore[attr-defined]
    assert queued(root) == [] and not (root / "tmp").exists() or os.listdir(root / "tmp") == []
    out = invoke(root, '{"args": ["a"]}\n{"args": "a"}\n', "--stdin-json", "echo")
    assert out.output == "Error: line 2: 'args' must be a list of strings; nothing was queued\n"  # type: ignore[attr-defined]
    out = invoke(root, '{"args": [], "prio": 1}\n', "--stdin-json", "echo")
    assert "line 1: unknown key 'prio'" in out.output  # type: ignore[attr-defined]
    out = invoke(root, "a\n", "--stdin", "nope")
    assert out.exit_code == 2 and "no job type 'nope'" in out.output  # type: ignore[attr-defined]
    out = invoke(root, "a\n", "--stdin", "echo", "extra")
    assert out.exit_code == 2 and "--stdin takes NAME only" in out.output  # type: ignore[attr-defined]
    assert queued(root) == []


def test_json_lines_carry_per_job_options_and_unique_keys(root: Path) -> None:
    text = "\n".join(json.dumps(d) for d in (
        {"args": ["low"]}, {"args": ["high"], "priority": 5}, {"args": ["k1"], "unique_key": "k"}, {"args": ["k2"], "unique_key": "k"},
        {"args": ["r"], "retries": 2},
    ))  # fmt: skip
    out = invoke(root, text + "\n", "--stdin-json", "echo")
    assert out.exit_code == 7, out.output  # type: ignore[attr-defined]
    ids = out.stdout.split()  # type: ignore[attr-defined]
    assert len(ids) == 5 and ids[2] == ids[3], "the second of a key prints the first's id"
    assert "Note: 1 job(s) not added" in out.stderr  # type: ignore[attr-defined]
    q = Queue(root)
    assert q.read(ids[1]).job.schedule.priority == 5  # type: ignore[union-attr]
    assert q.read(ids[4]).job.schedule.retries == 2  # type: ignore[union-attr]
    assert len(queued(root)) == 4
    _, summary = process(root)
    assert summary.succeeded[0] == ids[1], "the higher priority ran first"


def test_an_empty_input_queues_nothing(root: Path) -> None:
    out = invoke(root, "", "--stdin", "echo")
    assert out.exit_code == 0 and out.output == ""  # type: ignore[attr-defined]


def test_ten_thousand_jobs_in_one_batch(root: Path) -> None:
    out = invoke(root, "".join(f"{i}\n" for i in range(10_000)), "--stdin", "echo")
    assert out.exit_code == 0  # type: ignore[attr-defined]
    assert len(set(out.stdout.split())) == 10_000 == len(queued(root))  # type: ignore[attr-defined]


def _cli(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "miniq", "--root", str(root), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def test_enqueue_wait_exits_with_the_jobs_status(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 3\n")
    Queue(root).ensure_layout()
    waiting = [_cli(root, "enqueue", "--wait", "fail"), _cli(root, "enqueue", "--wait", "echo", "x")]
    deadline = time.monotonic() + 30
    while len(queued(root)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process(root)
    codes = [p.wait(30) for p in waiting]
    assert codes == [3, 0]
    ids = [p.stdout.read().strip() for p in waiting]  # type: ignore[union-attr]
    assert Queue(root).read(ids[0]).state is State.FAILED


def test_enqueue_wait_with_unique_waits_for_the_holder(root: Path) -> None:
    first = Queue(root).enqueue("echo", ["a"], unique="k")
    proc = _cli(root, "enqueue", "--wait", "--unique-key", "k", "echo", "b")
    time.sleep(0.5)
    process(root)
    assert proc.wait(30) == 0
    assert proc.stdout.read().strip() == first.id  # type: ignore[union-attr]
    out = CliRunner().invoke(main, ["--root", str(root), "enqueue", "--logs", "echo"])
    assert out.exit_code == 2 and "--logs needs --wait" in out.output
