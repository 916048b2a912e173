"""Day-two features on real files: pause, per-type caps, unique jobs,
follow-ups, stats and the units of recurring jobs.  Each is also proven
against real systemd in tests/integration/test_day_two.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import process, processor, write_job

from miniq.cli.main import main
from miniq.core.job import State
from miniq.core.manager import Manager
from miniq.core.schedule import Schedule
from miniq.store import slots, unique
from miniq.store.layout import Layout
from miniq.store.pause import pause, resume
from miniq.store.queue import Queue
from miniq.store.stats import collect, prometheus_text, write_textfile
from miniq.systemd import every


def held(root: Path) -> list[str]:
    return sorted(n for n in os.listdir(root / "delayed") if n.startswith("held-"))


# -- pause and resume ------------------------------------------------------------------


def test_a_paused_queue_holds_its_jobs_until_resumed_in_their_order(root: Path) -> None:
    q = Queue(root)
    ids = [q.enqueue("echo", [str(i)]).id for i in range(3)]
    pause(q.layout)
    sink, summary = process(root)
    assert summary.succeeded == [] and sorted(summary.held) == sorted(ids)
    assert held(root) == sorted(f"held-{i}.json" for i in ids)
    assert os.listdir(root / "queue") == []  # nothing left to start the path unit again and again
    assert all(q.read(i).state is State.DELAYED and q.read(i).held for i in ids)
    assert "held: the queue is paused" in sink.text()
    # Still held by another processor run (a reboot, another machine).
    assert process(root)[1].succeeded == []
    assert resume(q.layout) == ["@all"]
    _, summary = process(root)
    assert summary.succeeded == ids  # in their order
    assert held(root) == []


def test_pausing_a_job_type_lets_the_others_pass(root: Path) -> None:
    write_job(root, "backup", "#!/bin/sh\necho backup\n")
    q = Queue(root)
    b = q.enqueue("backup", []).id
    e = q.enqueue("echo", ["x"]).id
    pause(q.layout, ["backup"])
    _, summary = process(root)
    assert summary.succeeded == [e] and summary.held == [b]
    resume(q.layout, ["echo"])  # not paused: nothing changes
    assert process(root)[1].succeeded == []
    resume(q.layout, ["backup"])
    assert process(root)[1].succeeded == [b]


def test_pause_and_resume_commands(root: Path) -> None:
    runner = CliRunner()
    base = ["--root", str(root)]
    out = runner.invoke(main, [*base, "pause", "echo"])
    assert out.exit_code == 0 and out.output == "paused job type 'echo': no new job of it starts until miniq resume echo\n"
    bad = runner.invoke(main, [*base, "pause", "../x"])
    assert bad.exit_code == 2 and "Error: invalid job name '../x'" in bad.output
    job_id = Queue(root).enqueue("echo", ["a"]).id
    listed = runner.invoke(main, [*base, "list"])
    assert listed.output.startswith("paused: job type 'echo' (by ")
    shown = runner.invoke(main, [*base, "show", job_id])
    assert "paused:      job type 'echo'" in shown.output
    process(root)
    assert "held (paused or at cap)" in runner.invoke(main, [*base, "list"]).output
    doctor = runner.invoke(main, [*base, "doctor"])
    assert "problem: job type 'echo' is paused" in doctor.output and "fix: miniq resume echo" in doctor.output
    out = runner.invoke(main, [*base, "resume"])
    assert out.output == "resumed job type 'echo'\n"
    assert runner.invoke(main, [*base, "resume"]).output == "nothing to resume: nothing is paused\n"
    assert process(root)[1].succeeded == [job_id]


def test_a_job_enqueued_while_paused_is_cancelled_where_it_is_held(root: Path) -> None:
    q = Queue(root)
    pause(q.layout)
    job_id = q.enqueue("echo", []).id
    process(root)
    assert q.cancel(job_id) is State.DELAYED
    assert q.read(job_id).state is State.FAILED and held(root) == []


# -- per-type caps -----------------------------------------------------------------------

SPAN = """#!/bin/sh
echo "start $(date +%s.%N)" >> "$MINIQ_ROOT/spans-$MINIQ_JOB_ID"
sleep 0.4
echo "end $(date +%s.%N)" >> "$MINIQ_ROOT/spans-$MINIQ_JOB_ID"
"""


def spans(root: Path, ids: list[str]) -> list[tuple[float, float]]:
    out = []
    for job_id in ids:
        lines = dict(line.split() for line in (root / f"spans-{job_id}").read_text().splitlines())
        out.append((float(lines["start"]), float(lines["end"])))
    return sorted(out)


def test_a_type_capped_at_one_never_runs_twice_at_once_and_others_pass(root: Path) -> None:
    write_job(root, "backup", SPAN)
    write_job(root, "other", SPAN)
    (root / "miniq.conf").write_text("[job:backup]\nparallel = 1\n")
    q = Queue(root)
    backups = [q.enqueue("backup", []).id for _ in range(4)]
    others = [q.enqueue("other", []).id for _ in range(4)]
    p, _ = processor(root, parallel=3)
    summary = p.run()
    assert sorted(summary.succeeded) == sorted(backups + others)
    runs = spans(root, backups)
    assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:])), runs  # one at a time
    # The others ran beside a backup: some other started before the first backup ended.
    assert min(s for s, _ in spans(root, others)) < runs[0][1]
    assert summary.held, "the backups over the cap were held"
    assert slots.in_use(Layout(root)) == {"backup": (0, 1)}  # every slot given back


def test_a_slot_whose_claim_is_gone_is_free(root: Path) -> None:
    layout = Layout(root)
    Queue(root).ensure_layout()
    first = slots.take(layout, "backup", 1, "20260101-000000-000000-00000000", "deadhost+" + "0" * 32 + "+1+2+3")
    assert first is not None
    # Its claim does not exist in running/: the holder finished or was taken over.
    second = slots.take(layout, "backup", 1, "20260101-000000-000000-00000001", "me")
    assert second is not None
    first.release()  # freed meanwhile by another: a no-op
    assert slots.in_use(layout) == {"backup": (1, 1)}
    second.release()
    assert slots.in_use(layout) == {"backup": (0, 1)}


def test_a_live_claim_keeps_its_slot(root: Path) -> None:
    layout = Layout(root)
    Queue(root).ensure_layout()
    layout.claim("20260101-000000-000000-00000000", "host+x").touch()
    assert slots.take(layout, "backup", 1, "20260101-000000-000000-00000000", "host+x") is not None
    assert slots.take(layout, "backup", 1, "20260101-000000-000000-00000001", "other") is None
    assert slots.free(layout, "backup", 1) == 0


# -- unique jobs -------------------------------------------------------------------------


def test_unique_adds_one_job_and_prints_the_holder_with_exit_7(root: Path) -> None:
    runner = CliRunner()
    base = ["--root", str(root), "enqueue"]
    first = runner.invoke(main, [*base, "--unique", "echo", "a"])
    assert first.exit_code == 0
    again = runner.invoke(main, [*base, "--unique", "echo", "a"])
    assert again.exit_code == 7
    assert again.stdout == first.stdout
    assert "Note: job " in again.stderr and "no job added" in again.stderr
    other = runner.invoke(main, [*base, "--unique", "echo", "b"])  # other arguments: another key
    assert other.exit_code == 0 and other.stdout != first.stdout
    keyed = runner.invoke(main, [*base, "--unique-key", "nightly", "echo", "c"])
    assert runner.invoke(main, [*base, "--unique-key", "nightly", "echo", "d"]).stdout == keyed.stdout
    both = runner.invoke(main, [*base, "--unique", "--unique-key", "k", "echo"])
    assert both.exit_code == 2 and "Error: --unique and --unique-key both given" in both.output
    process(root)
    # Finished: the key is free again.
    assert runner.invoke(main, [*base, "--unique", "echo", "a"]).exit_code == 0


def test_a_unique_key_is_held_while_the_job_waits_to_be_retried(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 1\n")
    q = Queue(root)
    from miniq.core.schedule import Schedule

    job = q.enqueue("fail", [], schedule=Schedule(retries=1), unique="k")
    process(root)
    assert q.read(job.id).state is State.DELAYED
    with pytest.raises(unique.AlreadyQueued) as e:
        q.enqueue("fail", [], unique="k")
    assert e.value.job_id == job.id


def _race(root: str, barrier: object, out: object) -> None:
    q = Queue(Path(root))
    barrier.wait()  # type: ignore[attr-defined]
    try:
        out.put(q.enqueue("echo", [], unique="race").id)  # type: ignore[attr-defined]
    except unique.AlreadyQueued as e:
        out.put(e.job_id)  # type: ignore[attr-defined]


def test_racing_unique_enqueues_make_one_job(root: Path) -> None:
    Queue(root).ensure_layout()
    for round_ in range(5):
        ctx = multiprocessing.get_context("fork")
        barrier, out = ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(root), barrier, out)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        ids = {out.get(timeout=5) for _ in procs}
        assert len(ids) == 1, (round_, ids)
        assert len(os.listdir(root / "queue")) == 1
        process(root)


def test_a_stale_key_is_taken_over(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = Queue(root)
    job = q.enqueue("echo", [], unique="k")
    process(root)
    # A crash between publishing the record and giving the key back left it.
    path = unique.key_path(q.layout, "k", os.geteuid())
    path.write_text(job.id + "\n")
    assert q.enqueue("echo", [], unique="k").id != job.id
    # A key naming a job that was never published counts after the grace time only.
    ghost = "20260101-000000-000000-0000abcd"
    path2 = unique.key_path(q.layout, "g", os.geteuid())
    path2.write_text(ghost + "\n")
    with pytest.raises(unique.AlreadyQueued):
        q.enqueue("echo", [], unique="g")
    # This machine's clock ten minutes ahead of the file server's changes nothing (NFS).
    clock = time.time
    monkeypatch.setattr(time, "time", lambda: clock() + 600)
    with pytest.raises(unique.AlreadyQueued):
        q.enqueue("echo", [], unique="g")
    monkeypatch.undo()
    os.utime(path2, (0, 0))  # an mtime in 1970 (what NFS shows of a file being created) neither
    with pytest.raises(unique.AlreadyQueued):
        q.enqueue("echo", [], unique="g")
    later = time.time() + unique.GRACE + 1
    monkeypatch.setattr(unique, "_server_now", lambda layout: later)
    assert q.enqueue("echo", [], unique="g").id != ghost


def test_retrying_a_unique_job_takes_its_key_again(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 1\n")
    q = Queue(root)
    job = q.enqueue("fail", [], unique="k")
    process(root)
    newer = q.enqueue("fail", [], unique="k")
    with pytest.raises(unique.AlreadyQueued):
        q.retry(job.id)
    q.cancel(newer.id)
    q.retry(job.id)
    with pytest.raises(unique.AlreadyQueued):
        q.enqueue("fail", [], unique="k")


# -- follow-up jobs ----------------------------------------------------------------------

NOTIFY = """#!/bin/sh
echo "follows=$MINIQ_FOLLOWS_ID name=$MINIQ_FOLLOWS_NAME outcome=$MINIQ_FOLLOWS_OUTCOME status=$MINIQ_FOLLOWS_STATUS arg=$1"
"""


def test_a_failed_job_queues_its_follow_up_with_its_outcome(root: Path) -> None:
    write_job(root, "fail", "#!/bin/sh\nexit 3\n")
    write_job(root, "notify", NOTIFY)
    q = Queue(root)
    job = q.enqueue("fail", [], on_failure="notify", on_success="echo")
    sink, summary = process(root)
    assert len(summary.followups) == 1
    follow = summary.followups[0]
    record = q.read(follow)
    assert record.state is State.DONE and record.job is not None
    assert record.job.argv == (job.id,) and record.job.follows is not None and record.job.follows.id == job.id
    assert sink.output(follow) == [f"follows={job.id} name=fail outcome=exited status=3 arg={job.id}".encode()]
    assert f"job {job.id} (fail) is followed by job {follow} (notify)" in sink.text()
    # A follow-up has no follow-ups: the chain ends.
    assert q.read(follow).job.on_failure is None  # type: ignore[union-attr]


def test_success_queues_on_success_only_after_retries_and_cancel_counts_as_failure(root: Path) -> None:
    write_job(root, "notify", NOTIFY)
    write_job(root, "flaky", '#!/bin/sh\n[ "$MINIQ_ATTEMPT" = 2 ]\n')
    q = Queue(root)
    from miniq.core.schedule import Schedule

    ok = q.enqueue("flaky", [], schedule=Schedule(retries=1), on_failure="notify", on_success="echo")
    p, _ = processor(root)
    summary = p.run()
    assert summary.followups == [] and summary.retrying == [ok.id]  # not after the first, failed attempt
    time.sleep(1.1)
    summary = processor(root)[0].run()
    assert len(summary.followups) == 1 and q.read(summary.followups[0]).name == "echo"
    cancelled = q.enqueue("echo", [], on_failure="notify")
    q.cancel(cancelled.id)
    follow = [r for r in q.records([State.QUEUED]) if r.job and r.job.follows and r.job.follows.id == cancelled.id]
    assert len(follow) == 1 and follow[0].job.follows.outcome == "cancelled"  # type: ignore[union-attr]


def test_an_unknown_follow_up_type_is_refused_at_enqueue(root: Path) -> None:
    out = CliRunner().invoke(main, ["--root", str(root), "enqueue", "--on-failure", "nope", "echo"])
    assert out.exit_code == 2 and f"Error: no job type 'nope': expected an executable at {root}/jobs/nope.job" in out.output
    assert os.listdir(root / "queue") == [] if (root / "queue").exists() else True


def test_a_follow_up_is_queued_once_when_recording_runs_twice(root: Path) -> None:
    from miniq.core.result import Outcome, Result
    from miniq.store.followup import queue_follow_up

    write_job(root, "notify", NOTIFY)
    q = Queue(root)
    job = q.enqueue("echo", [], on_failure="notify")
    result = Result.unrun(Outcome.NOT_STARTED, "x", "h")
    owner = (os.getuid(), os.getgid())
    assert queue_follow_up(q.layout, job, result, owner) is not None
    assert queue_follow_up(q.layout, job, result, owner) is None  # a crash before the record: not twice


# -- stats -------------------------------------------------------------------------------


def test_stats_count_states_outcomes_and_write_a_prometheus_textfile(root: Path, tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    write_job(root, "fail", "#!/bin/sh\nexit 1\n")
    q = Queue(root)
    for _ in range(2):
        q.enqueue("echo", [])
    q.enqueue("fail", [])
    process(root)
    queued = q.enqueue("echo", ["later"])
    pause(q.layout, ["fail"])
    q.enqueue("fail", [])
    process(root)
    stats = collect(q)
    data = stats.to_json()
    assert data["finished_by_type"]["echo"]["done"] == 3 and data["finished_by_type"]["fail"]["failed"] == 1
    assert data["jobs_by_type"]["fail"]["held"] == 1
    assert data["paused"] == ["fail"]
    assert data["oldest_queued_age_seconds"] is None or data["oldest_queued_age_seconds"] >= 0
    assert q.read(queued.id).state is State.DONE
    # The quick count, from the names alone, agrees on every state; it reads no job.
    q.enqueue("echo", ["queued now"])
    q.enqueue("echo", ["in an hour"], schedule=Schedule(not_before=time.time() + 3600))
    whole, quick = collect(q).to_json(), collect(q, counts_only=True).to_json()
    assert quick["jobs"] == whole["jobs"] and whole["jobs"]["queued"] == 1 and whole["jobs"]["held"] == 1
    assert (quick["jobs_by_type"], quick["finished_by_hour"], quick["oldest_queued_age_seconds"]) == ({}, [], None)
    for entry in (root / "queue").iterdir():
        entry.write_bytes(b"\xff")  # unreadable: a count of names does not care
    assert collect(q, counts_only=True).to_json()["jobs"] == whole["jobs"]
    target = tmp_path / "textfile" / "miniq.prom"
    target.parent.mkdir()
    write_textfile(target, prometheus_text(stats, str(root)))
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    families = {f.name: f for f in text_string_to_metric_families(target.read_text())}
    finished = {(s.labels["job"], s.labels["state"], s.labels["outcome"]): s.value for s in families["miniq_finished_jobs"].samples}
    assert finished == {("echo", "done", "exited"): 3.0, ("fail", "failed", "exited"): 1.0}
    jobs = {(s.labels["state"], s.labels["job"]): s.value for s in families["miniq_jobs"].samples}
    assert jobs == {("held", "fail"): 1.0}
    assert families["miniq_job_duration_seconds"].type == "summary"
    counts = {s.labels["job"]: s.value for s in families["miniq_job_duration_seconds"].samples if s.name.endswith("_count")}
    assert counts == {"echo": 3.0, "fail": 1.0}
    assert [s.labels["job"] for s in families["miniq_paused"].samples] == ["fail"]
    assert all(s.labels["root"] == str(root) for f in families.values() for s in f.samples)
    # The processor refreshes it at the end of each run when miniq.conf says where.
    (root / "miniq.conf").write_text(f"[processor]\nprometheus-file = {target}\n")
    target.unlink()
    process(root)
    assert "miniq_jobs" in target.read_text()


def test_stats_command_text_json_and_bad_file(root: Path, tmp_path: Path) -> None:
    q = Queue(root)
    q.enqueue("echo", [])
    runner = CliRunner()
    text = runner.invoke(main, ["--root", str(root), "stats"])
    assert text.exit_code == 0 and text.output.startswith("jobs: 1 queued, 0 delayed, 0 held, 0 running\n")
    data = json.loads(runner.invoke(main, ["--root", str(root), "stats", "--json"]).output)
    assert data["jobs"]["queued"] == 1 and data["jobs_by_type"]["echo"]["queued"] == 1
    bad = runner.invoke(main, ["--root", str(root), "stats", "--prometheus", str(tmp_path / "x.txt")])
    assert bad.exit_code == 2 and "only files ending in .prom" in bad.output


# -- recurring jobs: the units ----------------------------------------------------------


def test_quote_keeps_every_argument_as_is() -> None:
    assert every.quote('a b"c\\d%e$f\n') == '"a b\\"c\\\\d%%e$$f\\n"'


def test_calendars_are_checked_by_systemd() -> None:
    assert every.check_calendar("daily") == "*-*-* 00:00:00"
    from miniq.core.errors import BadInput

    with pytest.raises(BadInput, match="invalid calendar 'every tuesday'"):
        every.check_calendar("every tuesday")


def test_schedule_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    item = every.Every("0123abcd", "Mon *-*-* 03:00:00", "backup", ("/srv/my data", "100%", "$HOME"), "/var/lib/miniq")
    for unit, text in every._units(item, Manager.SYSTEM).items():
        (tmp_path / unit).write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(p) for p in sorted(tmp_path.iterdir()))],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0 and "miniq-every" not in proc.stderr, proc.stderr


def test_a_fifo_where_a_key_should_be_is_stale_after_the_grace_time(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = Queue(root)
    q.ensure_layout()
    path = unique.key_path(q.layout, "k", os.geteuid())
    os.mkfifo(path)
    from miniq.core.errors import MiniqError

    with pytest.raises(MiniqError, match="could not take the unique key 'k'"):
        q.enqueue("echo", [], unique="k")  # it may be a key being written: nothing is added
    later = time.time() + unique.GRACE + 1
    monkeypatch.setattr(unique, "_server_now", lambda layout: later)
    job = q.enqueue("echo", [], unique="k")
    assert path.read_text() == job.id + "\n"


def test_every_list_as_json(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedules of this queue, as the Cockpit page reads them; --json only with --list."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    units = tmp_path / "config" / "systemd" / "user"
    units.mkdir(parents=True)
    made = every.Every("0a1b2c3d", "*-*-* 03:00:00", "echo", ("a b", "\x1b"), str(root), True)
    for name, text in every._units(made, Manager.USER).items():
        (units / name).write_text(text)
    other = every.Every("ffffffff", "daily", "echo", (), str(tmp_path / "another-root"))
    for name, text in every._units(other, Manager.USER).items():
        (units / name).write_text(text)
    result = CliRunner().invoke(main, ["--user", "--root", str(root), "every", "--list", "--json"])
    assert result.exit_code == 0, result.output
    [found] = json.loads(result.stdout)
    assert {k: found[k] for k in ("id", "calendar", "name", "argv", "stack")} == {
        "id": "0a1b2c3d", "calendar": "*-*-* 03:00:00", "name": "echo", "argv": ["a b", "\x1b"], "stack": True}  # fmt: skip
    assert isinstance(found["next"], str) and isinstance(found["last"], str)
    refused = CliRunner().invoke(main, ["--user", "--root", str(root), "every", "--json"])
    assert refused.exit_code == 2 and "--json goes with --list" in refused.output
