"""What `miniq list` and `miniq show` report: stable JSON rows, a table, and
only what is shown is read."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner
from helpers import processor

from miniq.cli.main import main
from miniq.core.job import State
from miniq.core.schedule import Schedule
from miniq.store.listing import ROW_KEYS, row, select
from miniq.store.queue import Queue


def test_list_rows_have_the_documented_shape(root: Path) -> None:
    q = Queue(root)
    q.enqueue("echo", ["x"])
    q.enqueue("echo", ["y"], schedule=Schedule(not_before=time.time() + 60, priority=2))
    found = [row(r) for r in select(q, list(State)).records]
    assert [r["state"] for r in found] == ["queued", "delayed"]
    assert all(tuple(r) == ROW_KEYS for r in found)
    result = CliRunner().invoke(main, ["--root", str(root), "list", "--json"])
    assert json.loads(result.stdout) == found
    table = CliRunner().invoke(main, ["--root", str(root), "status"]).stdout.splitlines()
    assert table[0].split() == ["ID", "STATE", "NAME", "WHEN", "RESULT", "ARGS"] and len(table) == 3
    assert table[1].split()[3:6] == ["queued", "0s", "ago"] and table[2].split()[3:6] == ["due", "in", "59s"]
    # A rejected file that was not a job at all has no name and no submission time.
    (root / "queue" / "junk.json").write_text("not a job")
    processor(root)[0].run()
    junk = [row(r) for r in select(q, [State.FAILED]).records if r.result and r.result.outcome.value == "rejected"]
    assert [(r["name"], r["submitted"], r["argv"], r["state"]) for r in junk] == [(None, None, [], "failed")]


def test_the_default_view_reads_only_what_it_shows(root: Path) -> None:
    q = Queue(root)
    ids = [q.enqueue("echo", [str(i)]).id for i in range(30)]
    urgent = q.enqueue("echo", ["urgent"], schedule=Schedule(priority=5))
    chosen = select(q, list(State))
    assert [r.id for r in chosen.records] == [urgent.id, *ids[:19]]
    assert chosen.more == {"queued": 11}
    # Unreadable entries would make a full read fail loudly; only the shown ones are opened.
    for job_id in ids[25:]:
        (root / "queue" / f"1000-{job_id}.json").write_bytes(b"\xff" * 10)
    assert [r.id for r in select(q, list(State)).records] == [urgent.id, *ids[:19]]
    table = CliRunner().invoke(main, ["--root", str(root), "list"]).stdout.splitlines()
    assert table[-1] == "... and 11 more queued (--all to list them)"
    everything = json.loads(CliRunner().invoke(main, ["--root", str(root), "list", "--all", "--json"]).stdout)
    assert len(everything) == 31
    assert sorted(r["reason"] or "" for r in everything)[-5:] == ["it is not UTF-8 (invalid start byte at byte 0)"] * 5


def test_status_is_an_alias_listed_once() -> None:
    result = CliRunner().invoke(main, ["--help"])
    commands = [line.split()[0] for line in result.stdout.split("Commands:")[1].splitlines() if line.strip()]
    assert commands.count("list") == 1 and "status" not in commands
    assert "(alias" not in CliRunner().invoke(main, ["status", "--help"]).stdout


def test_show_prints_attempts_and_limits(root: Path) -> None:
    q = Queue(root)
    job = q.enqueue("echo", ["hi"])
    processor(root)[0].run()
    out = CliRunner().invoke(main, ["--root", str(root), "show", job.id]).stdout
    assert f"id:          {job.id}" in out and "attempt 1:   exit code 0 after" in out and "output_lines: 1" in out
    stored = json.loads(CliRunner().invoke(main, ["--root", str(root), "show", "--json", job.id]).stdout)
    assert stored["state"] == "done" and stored["result"]["exit_code"] == 0


def test_pages_of_a_long_queue_read_only_their_own_jobs(root: Path) -> None:
    """--limit and --offset: each page in run order (finished: newest first),
    opening only its own jobs; owner names the file's owner."""
    import os
    import pwd

    q = Queue(root)
    ids = [q.enqueue("echo", [str(i)]).id for i in range(25)]

    def page(*args: str) -> list[dict[str, object]]:
        result = CliRunner().invoke(main, ["--root", str(root), "list", "--json", *args])
        assert result.exit_code == 0, result.output
        rows: list[dict[str, object]] = json.loads(result.stdout)
        return rows

    assert [r["id"] for r in page("--state", "queued", "--limit", "10")] == ids[:10]
    # Entries outside the page are not read (they would fail loudly).
    for job_id in ids[:10] + ids[20:]:
        (root / "queue" / f"1000-{job_id}.json").write_bytes(b"\xff")
    second = page("--state", "queued", "--limit", "10", "--offset", "10")
    assert [r["id"] for r in second] == ids[10:20]
    assert {r["owner"] for r in second} == {pwd.getpwuid(os.geteuid()).pw_name}
    assert page("--state", "queued", "--offset", "25") == []
    table = CliRunner().invoke(main, ["--root", str(root), "list", "--state", "queued", "--limit", "5", "--offset", "10"]).stdout
    assert table.splitlines()[-1] == "... and 10 more queued (--all to list them)"
    refused = CliRunner().invoke(main, ["--root", str(root), "list", "--all", "--offset", "5"])
    assert refused.exit_code == 2 and "--all shows every job" in refused.output
    # Finished jobs: the newest first, page by page.
    for job_id in ids[10:20]:
        (root / "queue" / f"1000-{job_id}.json").unlink()
    done = [q.enqueue("echo", [f"d{i}"]).id for i in range(6)]
    processor(root)[0].run()
    newest = [r["id"] for r in page("--state", "done", "--limit", "2", "--offset", "2")]
    assert newest == [done[2], done[3]]  # the newest two skipped, shown oldest first like list


def test_list_by_owner_names_a_user_or_refuses_clearly(root: Path) -> None:
    import os
    import pwd

    q = Queue(root)
    mine = q.enqueue("echo", ["x"]).id
    me = pwd.getpwuid(os.geteuid()).pw_name

    def listed(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["--root", str(root), "list", "--json", *args])
        return result.exit_code, result.output

    for who in (me, str(os.geteuid())):
        code, out = listed("--owner", who)
        assert code == 0 and [r["id"] for r in json.loads(out)] == [mine]
    code, out = listed("--owner", "65534")
    assert code == 0 and json.loads(out) == []  # a user with no job here
    for bad in ("no-such-user-here", "x\x00y", "\udcff"):
        code, out = listed("--owner", bad)
        assert code == 2 and "Error: no user" in out, (bad, out)
