"""Benchmark: `miniq enqueue` against a bare interpreter start.

    .venv/bin/python tests/bench/enqueue_time.py [RUNS]

Prints the median and 90th percentile wall time of `python -c pass` and of
`miniq enqueue` (to a scratch root), both with this venv's interpreter, and
their ratio.  Not a test: timings on shared machines are noisy.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return sorted(times)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    miniq = Path(sys.executable).parent / "miniq"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "jobs").mkdir()
        job = root / "jobs" / "noop.job"
        job.write_text("#!/bin/sh\n")
        job.chmod(0o755)
        bare = timed([sys.executable, "-c", "pass"], runs)
        enq = timed([str(miniq), "--root", str(root), "enqueue", "noop", "a", "b"], runs)
    for label, t in (("python -c pass", bare), ("miniq enqueue", enq)):
        print(f"{label:16} median {statistics.median(t) * 1000:6.1f} ms   p90 {t[int(len(t) * 0.9)] * 1000:6.1f} ms   ({runs} runs)")
    print(f"ratio (median): {statistics.median(enq) / statistics.median(bare):.2f}x")


if __name__ == "__main__":
    main()
