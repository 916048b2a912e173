"""Broken and hostile entries planted where the processor looks for jobs.

Shared by the unit tests (tests/test_robustness.py, plain processes) and the
real-systemd tests (tests/integration/robustness_checks.py): each ``Plant``
puts one kind of entry into ``queue/``, ``delayed/`` or ``running/`` of a
root, and the tests check that the good job behind it runs, nothing stops
the processor, and no byte of a link's target shows up anywhere under the
root.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miniq.core.job import new_id
from miniq.core.proc import Claimer

SECRET = b"TOPSECRET-" + secrets.token_hex(8).encode()


def job_json(**changes: Any) -> bytes:
    data: dict[str, Any] = {
        "miniq": 1, "id": new_id(), "name": "echo", "argv": ["planted"], "submitted": "2026-11-29T00:00:00+00:00",
        "submitter": {"uid": os.getuid(), "user": "x", "host": "h", "pid": 1},
    }  # fmt: skip
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            data.setdefault(outer, {})[inner] = value
        else:
            data[key] = value
    return json.dumps(data).encode()


@dataclass(frozen=True)
class Plant:
    kind: str
    #: (entry path, directory for secrets outside the root, how the processor
    #: sees a path): puts the entry in place.
    make: Callable[[Path, Path, Callable[[Path], Path]], None]


def _secret_file(outside: Path, mode: int) -> Path:
    path = outside / f"secret-{secrets.token_hex(4)}"
    path.write_bytes(SECRET + b"\n")
    path.chmod(mode)
    return path


def _write(data: bytes) -> Callable[[Path, Path, Callable[[Path], Path]], None]:
    return lambda entry, outside, seen: entry.write_bytes(data)


def _sparse(path: Path, size: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.truncate(fd, size)
    os.close(fd)


def age(entry: Path, seconds: float = 3600) -> None:
    """Make an entry look as if its holder stopped renewing it long ago."""
    old = time.time() - seconds
    os.utime(entry, (old, old), follow_symlinks=False)


def _deep() -> bytes:
    return b'{"miniq": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"


PLANTS = [
    Plant("symlink to a 0600 file", lambda e, o, seen: e.symlink_to(seen(_secret_file(o, 0o600)))),
    Plant("symlink to an unreadable file", lambda e, o, seen: e.symlink_to(seen(_secret_file(o, 0o000)))),
    Plant("FIFO", lambda e, o, seen: os.mkfifo(e)),
    Plant("directory", lambda e, o, seen: (e.mkdir(), (e / "inside.json").write_bytes(job_json()))),
    Plant("hard link", lambda e, o, seen: os.link(_secret_file(o, 0o600), e)),
    Plant("100 MB file", lambda e, o, seen: _sparse(e, 100 * 1024 * 1024)),
    Plant("non-UTF-8", _write(b'\xff\xfe{"miniq": 1}\x80')),
    Plant("deep nesting", _write(_deep())),
    Plant("schema: priority is a list", _write(job_json(**{"schedule.priority": [1, 2]}))),
    Plant("schema: not_before is a number", _write(job_json(**{"schedule.not_before": 1764000000}))),
    Plant("schema: a limit is a string", _write(job_json(**{"limits.memory_max": "1" * 100}))),
    Plant("schema: argv is a string", _write(job_json(argv="rm -rf /"))),
    Plant("schema: name is a number", _write(job_json(name=7))),
    Plant("schema: id is a path", _write(job_json(id="../../etc/passwd"))),
    Plant("schema: submitter is a string", _write(job_json(submitter="root"))),
    Plant("schema: attempts is an object", _write(job_json(attempts={"outcome": "exited"}))),
    Plant("schema: retries is huge", _write(job_json(**{"schedule.retries": 10**12}))),
    Plant("schema: after holds a path", _write(job_json(**{"schedule.after": ["../../x"]}))),
]


def plant_name(where: str, job_id: str) -> str:
    """A name the processor will look at first in ``where``."""
    if where == "queue":
        return f"0000-{job_id}.json"
    if where == "delayed":
        return f"0000000000000-{job_id}.json"
    gone = Claimer.current()
    # A claim of this host whose processor is provably gone: recovered at once.
    return f"{job_id}@{gone.host}+{gone.boot}+{gone.pidns}+999999999+1.json"


def leaked(root: Path) -> list[str]:
    """Files under ``root`` (never following links) that contain the secret."""
    found = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                continue
            try:
                if SECRET in path.read_bytes():
                    found.append(str(path))
            except PermissionError:
                continue
    return found
