"""Operating the queue against real systemd: delays, wait, cancel, retries,
parallelism and list --json.  Imported by test_*_manager.py."""

from __future__ import annotations

import json
import time

import pytest

from .flows import Flow

pytestmark = pytest.mark.systemd


def test_delayed_job_starts_on_time_by_its_own_timer(flow: Flow) -> None:
    flow.add_job("stamp", '#!/bin/sh\ndate +%s.%N > "$MINIQ_ROOT/started-$MINIQ_JOB_ID"\n')
    job_id, t0 = flow.enqueue_timed("--in", "3s", "stamp")
    assert flow.record(job_id)["state"] == "delayed"
    flow.wait_final([job_id], timeout=30)
    late = flow.started_at(job_id) - t0
    print(f"--in 3s started after {late:.2f} s")
    assert 1.5 <= late <= 4.5, (late, flow.journal_text()[-3000:])
    # What started it was the wake timer, not the minutely one.
    assert "wake timer armed" in flow.journal_text()


def test_wait_returns_the_jobs_exit_code(flow: Flow) -> None:
    flow.add_job("seven", "#!/bin/sh\nsleep 1\nexit 7\n")
    job_id = flow.cli("enqueue", "seven").stdout.strip()
    proc = flow.cli("wait", job_id, check=False, timeout=60)
    assert proc.returncode == 7, proc.stderr


def test_cancel_a_running_job_leaves_no_scope(flow: Flow) -> None:
    flow.add_job("long", "#!/bin/sh\necho started\nexec sleep 300\n")
    job_id = flow.cli("enqueue", "long").stdout.strip()
    flow.wait_running(job_id)
    assert f"miniq-job-{job_id}.scope" in flow.job_scopes()
    out = flow.cli("cancel", job_id, timeout=90).stdout
    assert out.strip() == f"cancelled {job_id} (was running)"
    record = flow.record(job_id)
    assert record["state"] == "failed" and record["result"]["outcome"] == "cancelled"
    assert flow.leftover_scopes() == []
    assert flow.cli("wait", job_id, check=False).returncode == 130


def test_retries_show_every_attempt(flow: Flow) -> None:
    flow.add_job(
        "flaky",
        '#!/bin/sh\nf="$MINIQ_ROOT/count-$MINIQ_JOB_ID"\nn=$(( $(cat "$f" 2>/dev/null || echo 0) + 1 ))\necho $n > "$f"\n[ $n -ge 3 ]\n',
    )
    job_id = flow.cli("enqueue", "--retries", "3", "flaky").stdout.strip()
    flow.wait_final([job_id], timeout=60)
    record = flow.record(job_id)
    assert record["state"] == "done"
    assert [(a["outcome"], a["exit_code"]) for a in record["attempts"]] == [("exited", 1), ("exited", 1), ("exited", 0)]
    shown = flow.cli("show", job_id).stdout
    assert [line.split(":", 1)[0] for line in shown.splitlines() if line.startswith("attempt")] == ["attempt 1", "attempt 2", "attempt 3"]


def test_parallel_four(flow: Flow) -> None:
    flow.add_job("nap", "#!/bin/sh\nsleep 1\n")
    flow.sh(f"printf '[processor]\\nparallel = 4\\n' > {flow.root}/miniq.conf")
    flow.pause()
    try:
        ids = flow.enqueue_many("nap", 40)
        start = time.monotonic()
        flow.resume("miniq-process.path")
        waited = flow.wait_final(ids, timeout=120)
    finally:
        flow.sh(f"rm -f {flow.root}/miniq.conf")
        flow.resume()
    elapsed = time.monotonic() - start
    print(f"parallel 4: 40 jobs of sleep 1 took {elapsed:.1f} s")
    assert waited < 20
    units = {flow.record(i)["result"]["unit"] for i in ids}
    assert units == {f"miniq-job-{i}.scope" for i in ids}
    assert flow.leftover_scopes() == [] and flow.failed_units() == []


def test_list_json_shape(flow: Flow) -> None:
    flow.add_job("stamp", "#!/bin/sh\n")
    flow.cli("enqueue", "--in", "1h", "stamp")
    rows = json.loads(flow.cli("list", "--json", "--all").stdout)
    assert rows, "nothing listed"
    types = {"id": str, "state": str, "argv": list, "priority": int, "after": list, "retries": int, "attempts": int, "held": bool,
             "owner": str}
    # name and submitted are null only for a rejected file that was not a job.
    optional = {"name": str, "submitted": str, "not_before": str, "outcome": str, "exit_code": int, "signal": str,
                "reason": str, "started": str, "ended": str, "duration": float, "host": str, "lease": str,
                "unique": str, "on_success": str, "on_failure": str, "follows": str}  # fmt: skip
    for row in rows:
        assert set(row) == set(types) | set(optional)
        for key, kind in types.items():
            assert isinstance(row[key], kind), (key, row)
        for key, kind in optional.items():
            assert row[key] is None or isinstance(row[key], (kind, int) if kind is float else kind), (key, row)
        assert row["state"] in ("queued", "delayed", "running", "done", "failed")
    assert "delayed" in {r["state"] for r in rows}
    for job in [r["id"] for r in rows if r["state"] == "delayed"]:
        flow.cli("cancel", job)
