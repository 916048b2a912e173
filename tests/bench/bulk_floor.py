"""The floor of a durable bulk enqueue, in plain Python, to set beside
``miniq enqueue --stdin``:

    farm-bench --vs '.venv/bin/python tests/bench/bulk_floor.py ROOT2 10000' -- \\
        sh -c 'rm -rf ROOT/queue ROOT/tmp; exec .venv/bin/miniq --root ROOT enqueue --stdin true < LINES >/dev/null'

It stages N small JSON files in ``ROOT/tmp`` (names as long as miniq's),
flushes them with one syncfs, renames them into ``ROOT/queue``, flushes that
directory and prints the ids: what a durable batch must do at least.  Put
ROOT2 beside ROOT (the same parent directory), or use ROOT itself (the
benchmark does, after emptying it): creating files costs very
different amounts in different places of one ext4 file system.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
import time


def main() -> None:
    root, n = sys.argv[1], int(sys.argv[2])
    for d in ("tmp", "queue"):
        shutil.rmtree(f"{root}/{d}", ignore_errors=True)
        os.makedirs(f"{root}/{d}")
    staged: list[tuple[str, str]] = []
    ids: list[str] = []
    for i in range(n):
        job_id = f"20261202-000000-{i:06d}-{os.urandom(4).hex()}"
        data = json.dumps({"miniq": 1, "id": job_id, "name": "true", "argv": [str(i)], "submitted": time.time()}).encode()
        tmp = f"{root}/tmp/.1000-{job_id}.json~host+{'0' * 32}+4026531836+{os.getpid()}+1~{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.write(fd, data)
        os.close(fd)
        staged.append((tmp, f"{root}/queue/1000-{job_id}.json"))
        ids.append(job_id)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    ctypes.CDLL(None, use_errno=True).syncfs(fd)
    os.close(fd)
    for tmp, final in staged:
        os.rename(tmp, final)
    fd = os.open(f"{root}/queue", os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    sys.stdout.write("\n".join(ids) + "\n")


if __name__ == "__main__":
    main()
