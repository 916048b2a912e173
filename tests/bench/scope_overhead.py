"""Benchmark: the cost of a scope per job, and enqueue-to-start latency.

    sudo .venv/bin/python tests/bench/scope_overhead.py [JOBS]

Boots the sandbox systemd (tests/testbed), then inside it, as a system
service (so the processor talks to the system manager as in production):
  1. drains JOBS queued `true` jobs with a scope per job, and again without
     scopes (PlainRunner), printing jobs per second for each;
  2. installs the units for the checkout's venv and measures, 20 times, the
     time from just before `miniq enqueue` to the job's first instruction.
Not a test: timings on shared machines are noisy.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests"))

from testbed.sandbox import Sandbox  # noqa: E402

PY = str(REPO / ".venv" / "bin" / "python")
MINIQ = str(REPO / ".venv" / "bin" / "miniq")

DRAIN = """
import sys, time
from pathlib import Path
from miniq.run.processor import Processor
from miniq.store.queue import Queue
from miniq.run.scope import PlainRunner
from miniq.settings import Manager
from miniq.systemd.journal import ConsoleSink
root, scoped, n = Path(sys.argv[1]), sys.argv[2] == "scope", int(sys.argv[3])
q = Queue(root)
for i in range(n):
    q.enqueue("true", [])
class Null:
    def send(self, *a): pass
t = time.perf_counter()
s = Processor(q, Manager.SYSTEM, runner=None if scoped else PlainRunner(), sink=Null()).run()
dt = time.perf_counter() - t
assert len(s.succeeded) == n, s
print(f"{dt:.3f}")
"""


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        sb = Sandbox(Path(tmp) / "scratch", "bench", binds=[REPO])
        sb.boot()
        try:
            sb.sh("mkdir -p /srv/q/jobs && ln -s /bin/true /srv/q/jobs/true.job")
            for mode in ("scope", "plain"):
                out = sb.run(
                    [
                        "systemd-run",
                        "--wait",
                        "--pipe",
                        "--quiet",
                        f"--setenv=PYTHONPATH={REPO}",
                        PY,
                        "-c",
                        DRAIN,
                        "/srv/q",
                        mode,
                        str(jobs),
                    ],
                    timeout=600,
                ).stdout.split()[-1]
                seconds = float(out)
                print(f"{mode:5}: {jobs} jobs in {seconds:.2f} s = {jobs / seconds:.0f} jobs/s ({seconds / jobs * 1000:.2f} ms per job)")
            sb.sh(f"MINIQ_ROOT=/srv/lat {MINIQ} --system install-units --now >/dev/null")
            sb.sh(
                "mkdir -p /srv/lat/jobs && cat > /srv/lat/jobs/stamp.job && chmod +x /srv/lat/jobs/stamp.job",
                input='#!/bin/sh\ndate +%s.%N > "/srv/lat/started-$MINIQ_JOB_ID"\n',
            )
            latencies = []
            for _ in range(20):
                line = sb.sh(f"t=$(date +%s.%N); MINIQ_ROOT=/srv/lat {MINIQ} enqueue stamp; echo $t").stdout.split()
                job_id, t0 = line[0], float(line[1])
                stamp = sb.path(f"/srv/lat/started-{job_id}")
                deadline = time.monotonic() + 30
                while not (stamp.exists() and stamp.read_text().strip()):
                    assert time.monotonic() < deadline, "job did not start"
                    time.sleep(0.01)
                latencies.append(float(stamp.read_text()) - t0)
                time.sleep(0.3)
            latencies.sort()
            print(
                f"enqueue-to-start (path unit, system manager, includes the CLI's own start): "
                f"median {statistics.median(latencies) * 1000:.0f} ms, min {latencies[0] * 1000:.0f} ms, "
                f"max {latencies[-1] * 1000:.0f} ms over {len(latencies)}"
            )
        finally:
            sb.close()


if __name__ == "__main__":
    main()
