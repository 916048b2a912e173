"""``python -m tests.nemesis [--seconds N] [--seed S]``: a nemesis round as long as asked (harness.py)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nemesis.harness import REPO, Nemesis  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="A seeded nemesis against machines sharing a queue.")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="miniq-nemesis-", dir="/var/tmp"))
    wheels = work / "wheels"
    wheels.mkdir()
    wheels.chmod(0o755)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(REPO), "hatchling"], check=True)
    print(f"seed {args.seed}", flush=True)
    print(json.dumps(Nemesis(work / "run", wheels, args.seed).run(args.seconds), indent=2))


if __name__ == "__main__":
    main()
