"""Reading a job's output back from the journal (``miniq logs``).

Entries are found by ``MINIQ_JOB_ID`` through journalctl.  Only the job's own
lines are written (``MINIQ_STREAM``), unless ``events`` adds miniq's start
and finish entries; long lines cut into several entries are joined again.
A note on stderr says when lines were dropped (output.py).

Anyone may send the journal an entry with any ``MINIQ_*`` field, so an entry
counts only if journald's *trusted* fields (which journald sets from the
sender's kernel credentials and cgroup, and no sender can set) say the job's
processor may have written it (``trusted_matches``): in the system queue,
sent by root, or with the job owner's credentials from
``miniq-process.service`` (a root processor sends a user's job output so,
journal.py; the owner's own processes, jobs included, run elsewhere); in a
user's queue, sent by that user.  No user can add a line to another user's
job output or end their ``logs -f``.

A user can read only the journal files journald keeps for them: with a
persistent journal, ``user-UID.journal``; with a volatile one, none at all
(everything is in the system journal).  ``access_problem`` tells when the
caller cannot see their jobs' output, and what fixes it.
"""

from __future__ import annotations

import grp
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import hangup
from ..core.manager import Manager

PROCESSOR_UNIT = "miniq-process.service"
READER_GROUPS = ("systemd-journal", "adm", "wheel")


@dataclass
class Seen:
    """What reading a job's output found."""

    ended: bool = False
    lines: int = 0
    dropped: int = 0


def trusted_matches(job_id: str, manager: Manager, owner: int, processor_uid: int) -> list[str]:
    """journalctl matches for job ``job_id`` of ``owner`` that admit only what its
    processor may have written (module comment).  Matches of one field are
    alternatives, of different fields all must hold; ``+`` joins two groups.

    System manager: entries sent by root (only root can send as root), or
    sent with the owner's credentials from ``miniq-process.service`` (a root
    processor sends a user's job output so).  A user manager: entries sent by
    the user whose manager it is; no other user can send as them."""
    job = f"MINIQ_JOB_ID={job_id}"
    if manager is Manager.USER:
        return [job, f"_UID={processor_uid}"]
    matches = [job, "_UID=0"]
    if owner != 0:
        matches += ["+", job, f"_UID={owner}", f"_SYSTEMD_UNIT={PROCESSOR_UNIT}"]
    return matches


def _entries(args: list[str]) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(["journalctl", "--no-pager", "-o", "json", *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        # In the system queue's helper: a client that hangs up ends a follow.
        with hangup.on_hangup(proc.terminate):
            for line in proc.stdout:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
        hangup.check()
    finally:
        proc.terminate()
        proc.wait()


def _message(entry: dict[str, Any]) -> bytes:
    msg = entry.get("MESSAGE", "")
    return bytes(msg) if isinstance(msg, list) else str(msg).encode("utf-8", "surrogateescape")


def job_output(
    job_id: str, follow: bool, finished: bool, write: Callable[[bytes], None], note: Callable[[str], None],
    events: bool = False, wait: float = 3.0, trusted: list[str] | None = None,
) -> Seen:  # fmt: skip
    """Write one job's journal lines with ``write``; notes go to ``note``.

    Follows a running job until its finish entry arrives.  For a finished
    job, journald may still be writing the last entries, so reading retries
    for up to ``wait`` seconds until the finish entry is there.  ``trusted``
    (``trusted_matches``, which names the job too) admits only entries its
    processor may have written.
    """
    match = trusted or [f"MINIQ_JOB_ID={job_id}"]
    seen = Seen()

    def emit(entry: dict[str, Any]) -> None:
        if entry.get("MINIQ_EVENT") == "dropped":
            seen.dropped += int(entry.get("MINIQ_DROPPED") or 0)
            note(str(entry.get("MESSAGE", "")))
        elif events or "MINIQ_STREAM" in entry:
            # A long line was cut into several entries: join them again.
            partial = entry.get("MINIQ_PARTIAL") == "1"
            write(_message(entry) + (b"" if partial else b"\n"))
            seen.lines += 0 if partial or "MINIQ_STREAM" not in entry else 1

    if follow and not finished:
        for entry in _entries(["-f", "-n", "all", *match]):
            emit(entry)
            if entry.get("MINIQ_EVENT") == "finished":
                seen.ended = True
                break
        return seen
    deadline = time.monotonic() + wait
    while True:
        entries = list(_entries(match))
        seen.ended = any(e.get("MINIQ_EVENT") == "finished" for e in entries)
        if seen.ended or not finished or time.monotonic() > deadline:
            for entry in entries:
                emit(entry)
            return seen
        time.sleep(0.1)


def _journald_storage() -> str:
    """journald's Storage= setting (last one wins), "auto" by default."""
    storage = "auto"
    paths = [Path("/etc/systemd/journald.conf")]
    for d in (Path("/usr/lib/systemd/journald.conf.d"), Path("/etc/systemd/journald.conf.d"), Path("/run/systemd/journald.conf.d")):
        paths += sorted(d.glob("*.conf")) if d.is_dir() else []
    for path in paths:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.strip().partition("=")
                if key.strip() == "Storage" and value.strip():
                    storage = value.strip()
        except OSError:
            continue
    return storage


def persistent() -> bool:
    """Whether journald keeps the journal on disk (and so per-user files)."""
    storage = _journald_storage()
    if storage in ("volatile", "none"):
        return False
    return storage == "persistent" or Path("/var/log/journal").is_dir()


def reads_everything() -> bool:
    """Whether the caller may read the whole journal (root, or a reader group)."""
    if os.geteuid() == 0:
        return True
    mine = set(os.getgroups()) | {os.getegid()}
    for name in READER_GROUPS:
        try:
            if grp.getgrnam(name).gr_gid in mine:
                return True
        except KeyError:
            continue
    return False


def access_problem() -> str | None:
    """Why the caller cannot read their jobs' output, with the fix; None if they can."""
    if reads_everything() or persistent():
        return None
    return (
        "the journal on this host is volatile (kept in /run only), so journald keeps no journal files for your user "
        "and your jobs' output is in the system journal, which you may not read; "
        "fix: as root, mkdir -p /var/log/journal && systemctl restart systemd-journald (a persistent journal), "
        "or add yourself to the systemd-journal group"
    )
