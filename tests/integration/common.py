"""Checks every installation kind must pass; imported by test_*_manager.py.

Each importing module defines a module-scoped ``flow`` fixture: a sandbox
with miniq installed the README way for one kind of installation.
"""

from __future__ import annotations

import json
import time

import pytest

from .flows import NOTIFY, Flow

pytestmark = pytest.mark.systemd


def test_readme_flow_runs_the_job_promptly(flow: Flow) -> None:
    flow.add_job("notify", NOTIFY)
    job_id, t0 = flow.enqueue_timed("notify", "Title", "This is a message!", "9")
    flow.wait_final([job_id], timeout=30)
    latency = flow.started_at(job_id) - t0
    print(f"enqueue-to-start latency ({flow.mode}, {flow.user or 'root'}): {latency * 1000:.0f} ms")
    # The timer is enabled too but fires at most once a minute: a start this
    # soon after enqueue came from the path unit (proven alone further down).
    assert latency < 5, latency
    record = flow.record(job_id)
    assert record["state"] == "done"
    assert record["argv"] == ["Title", "This is a message!", "9"]
    assert record["result"]["exit_code"] == 0
    assert record["result"]["unit"] == f"miniq-job-{job_id}.scope"
    journal = ""
    for _ in range(50):
        journal = flow.journal_text()
        if f"job {job_id} (notify) finished: exit code 0" in journal:
            break
        time.sleep(0.1)
    user = flow.user or "root"
    assert f"args: 3 [Title] [This is a message!] [9] user={user}" in journal
    assert f"job {job_id} (notify) finished: exit code 0" in journal
    # The job ran inside its own scope, and the scope is gone.
    assert f"/miniq-job-{job_id}.scope" in journal
    assert flow.leftover_scopes() == []


def test_path_unit_alone_starts_the_processor(flow: Flow) -> None:
    flow.add_job("notify", NOTIFY)
    flow.pause("miniq-process.timer")
    try:
        job_id, t0 = flow.enqueue_timed("notify", "a")
        flow.wait_final([job_id], timeout=30)
        assert flow.started_at(job_id) - t0 < 30
    finally:
        flow.resume("miniq-process.timer")


def test_an_idle_queue_starts_no_processor_and_the_timer_fires_only_at_startup(flow: Flow) -> None:
    """README, "Units": the timer runs the processor once after its manager
    starts (what a reboot left: tests/vm/test_power_cuts.py boots a guest to
    see it), and never by a period on a local root; a start with nothing
    queued, delayed or claimed is skipped by systemd itself: no Python starts,
    and the one journal line is systemd's."""
    monotonic = flow.run([*flow.systemctl, "show", "-P", "TimersMonotonic", "miniq-process.timer"]).stdout
    calendar = flow.run([*flow.systemctl, "show", "-P", "TimersCalendar", "miniq-process.timer"]).stdout.strip()
    assert "OnStartupUSec" in monotonic and "OnBootUSec" not in monotonic and calendar in ("", "{}"), (monotonic, calendar)
    # Once per boot, on time: systemd's default accuracy (a minute) made what a reboot left wait up to 75 s.
    assert flow.run([*flow.systemctl, "show", "-P", "AccuracyUSec", "miniq-process.timer"]).stdout.strip() == "1s"
    flow.pause()
    aside = f"{flow.root}/../aside-{time.monotonic_ns()}"
    flow.sh(f"mkdir -p {aside} && for d in queue delayed running; do mkdir -p {aside}/$d && "
            f"find {flow.root}/$d -mindepth 1 -maxdepth 1 -exec mv {{}} {aside}/$d/ \\; ; done")  # fmt: skip
    try:
        unit = [*flow.systemctl, "show", "-P", "ExecMainStartTimestampMonotonic", "miniq-process.service"]
        before = flow.run(unit).stdout.strip()
        shown = flow.run([*flow.journal, "-n", "0", "--show-cursor", "--no-pager"], check=False).stdout.strip()
        after = ["--after-cursor", shown.rsplit("cursor: ", 1)[-1]] if "cursor: " in shown else []  # none yet: every line is new
        for _ in range(3):
            flow.run([*flow.systemctl, "start", "miniq-process.service"])
        assert flow.run(unit).stdout.strip() == before  # no process was started
        assert flow.run([*flow.systemctl, "show", "-P", "ConditionResult", "miniq-process.service"]).stdout.strip() == "no"
        lines = [line for line in flow.run([*flow.journal, "--no-pager", "-o", "cat", *after], check=False).stdout.splitlines()
                 if line.strip()]  # fmt: skip
        assert all("skipped because no trigger condition checks were met" in line for line in lines), lines
        print(f"an idle start: {len(lines)} journal line(s) for 3 starts, all systemd's; no process started")
    finally:
        flow.sh(f"for d in queue delayed running; do find {aside}/$d -mindepth 1 -maxdepth 1 -exec mv {{}} {flow.root}/$d/ \\; ; done; "
                f"rm -r {aside}")  # fmt: skip
        flow.resume()


def test_bad_files_are_quarantined_and_good_jobs_still_run(flow: Flow) -> None:
    flow.add_job("notify", NOTIFY)
    flow.pause()
    try:
        first = flow.cli("enqueue", "notify", "first").stdout.strip()
        # Files a careless script or another miniq version might drop in the queue.
        flow.sh(
            f"cd {flow.root} && printf '{{broken' > tmp/x && mv tmp/x queue/00-broken.json"
            f" && printf '{{\"miniq\": 7}}' > tmp/y && mv tmp/y queue/{first[:-1]}0-schema.json"
        )
        last = flow.cli("enqueue", "notify", "last").stdout.strip()
    finally:
        flow.resume()
    flow.wait_final([first, last], timeout=30)
    assert list(flow.sb.path(f"{flow.root}/queue").iterdir()) == []
    reasons = {}
    for path in flow.sb.path(f"{flow.root}/failed").iterdir():
        data = json.loads(path.read_text())
        reasons[data.get("queued_as")] = data["result"]["reason"]
    assert reasons["queue/00-broken.json"].startswith("unusable job file: it is not valid JSON: Expecting property name")
    assert reasons[f"queue/{first[:-1]}0-schema.json"] == (
        "unusable job file: it is not a usable job file: unsupported schema version 7 (this miniq reads version 1)"
    )
    assert flow.record(first)["state"] == "done" and flow.record(last)["state"] == "done"
    assert flow.failed_units() == []
    assert flow.unit_state("miniq-process.path") == "active"


def test_unknown_type_at_run_time_is_recorded(flow: Flow) -> None:
    flow.add_job("gone", "#!/bin/sh\necho hi\n")
    flow.pause()
    try:
        job_id = flow.cli("enqueue", "gone").stdout.strip()
        flow.sh(f"rm {flow.root}/jobs/gone.job")
    finally:
        flow.resume()
    flow.wait_final([job_id], timeout=30)
    record = flow.record(job_id)
    assert record["state"] == "failed"
    assert record["result"] == {
        **record["result"],
        "outcome": "not-started",
        "reason": f"no job type 'gone': expected an executable at {flow.root}/jobs/gone.job",
    }
    assert flow.failed_units() == []


def test_bursts_never_wait_for_the_timer(flow: Flow) -> None:
    """A trickle for 30 s and a flood of 2000, with the timer stopped."""
    flow.add_job("quick", '#!/bin/sh\necho "$1"\n')
    flow.pause("miniq-process.timer")
    try:
        # One job every 0.1 s (plus the CLI's own start-up) for 30 s.
        trickle = flow.sh(
            f"end=$(( $(date +%s) + 30 )); while [ $(date +%s) -lt $end ]; do "
            f"{flow.miniq} {' '.join(flow.cli_flag)} enqueue quick t || exit 1; sleep 0.1; done",
            timeout=180,
        ).stdout.split()
        waited = flow.wait_final(trickle, timeout=20)
        print(f"trickle: {len(trickle)} jobs in 30 s; last finished {waited:.2f} s after the last enqueue")
        # 2000 at once, through the library (the CLI would take minutes to start 2000 times).
        flood = flow.enqueue_many("quick", 2000, numbered=True)
        waited = flow.wait_final(flood, timeout=300)
        print(f"flood: 2000 jobs finished {waited:.1f} s after the last enqueue")
    finally:
        flow.resume("miniq-process.timer")
    assert flow.failed_units() == []
    assert flow.unit_state("miniq-process.path") == "active"
    done = {p.stem for p in flow.sb.path(f"{flow.root}/done").iterdir()}
    assert set(trickle) | set(flood) <= done
    assert flow.leftover_scopes() == []


def test_shipped_units_verify(flow: Flow, repo: str) -> None:
    """systemd-analyze verify on units/ as shipped (ExecStart=/usr/bin/miniq)."""
    flow.sb.run(["ln", "-sf", flow.miniq, "/usr/bin/miniq"])
    args = ["systemd-analyze", *(["--user"] if flow.mode == "--user" else []), "verify", "--man=no"]
    from miniq.core.manager import Manager
    from miniq.systemd.units import units_for

    units = units_for(Manager.USER if flow.mode == "--user" else Manager.SYSTEM)
    proc = flow.run([*args, *(f"{repo}/units/{u}" for u in units)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""


def readme_block(after: str) -> str:
    """The first ```sh block of README.md after the line starting with ``after``."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
    rest = readme[readme.index(after) :]
    return rest.split("```sh\n", 1)[1].split("```", 1)[0]


def test_getting_started_works_literally(flow: Flow) -> None:
    """README's Getting started, run as written, in a fresh login shell of this user."""
    block = readme_block("Then, in the same shell, as the same user")
    if flow.user is None and flow.mode == "--user":
        block = block.replace("miniq ", "miniq --user ")  # as README says for root's own user manager
    proc = flow.run(["bash", "-e", "-c", block], timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "notify: Title - This is a message! (9)", proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr
