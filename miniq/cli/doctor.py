"""``miniq doctor``: find what keeps a queue from working, and say how to fix it.

Each check yields a ``Finding``: ``ok`` with a short statement, or a problem
with a plain sentence and the command that fixes it.  Checks never change
anything.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import MiniqError, SystemdUnavailable
from ..core.manager import Manager
from ..store.queue import Queue
from ..systemd.units import enable_for, units_for


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str
    fix: str = ""


def _show(manager: Manager, unit: str) -> dict[str, str]:
    props = "LoadState,ActiveState,UnitFileState,Result,Paths"
    proc = subprocess.run(manager.systemctl("show", f"--property={props}", unit), capture_output=True, text=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def check(queue: Queue, manager: Manager) -> Iterator[Finding]:
    """Run every check for ``queue`` as served by ``manager``."""
    reachable = yield from _systemd(manager)
    if reachable:
        yield from _units(queue, manager)
    yield from _journal(manager)
    if not queue.root.is_dir():
        yield Finding(False, f"the queue root {queue.root} does not exist",
                      f"mkdir -p {queue.layout.jobs} and put job types there (executables named NAME.job)")  # fmt: skip
        return
    yield from _writable(queue)
    yield from _privacy(queue)
    if manager is Manager.SYSTEM and reachable:
        yield from _proc_visibility(manager)
    yield from _claims(queue)
    yield from _pauses(queue)
    yield from _leftovers(queue)
    yield from _config_place(queue)
    yield from _job_types(queue)


def _leftovers(queue: Queue) -> Iterator[Finding]:
    """What the queue keeps that no job is: rejected entries, a crash's staging files."""
    import time

    now, found = time.time(), False
    for where, what, fix in (
        (queue.layout.rejected, "entries the processor could not use, kept for inspection until rejected-retention",
         "look at them, then remove them: miniq purge --older-than 0 (or wait: a processor removes them after rejected-retention)"),
        (queue.layout.tmp, "staging files that crashed writers left",
         "nothing to do: a processor removes them once it can tell their writer is gone, or after an hour"),
    ):  # fmt: skip
        try:
            entries = [e for e in os.scandir(where) if not e.name.startswith("clock@")]
            ages = [now - e.stat(follow_symlinks=False).st_ctime for e in entries]
        except OSError:
            continue
        if where == queue.layout.tmp:
            ages = [a for a in ages if a > 3600]
        if ages:
            found = True
            yield Finding(False, f"{len(ages)} in {where} ({what}); the oldest is {max(ages) / 86400:.1f} days old", fix)
    if not found:
        yield Finding(True, "nothing left over in rejected/ or tmp/")


def _config_place(queue: Queue) -> Iterator[Finding]:
    """The system queue's configuration moved to /etc/miniq in 0.3."""
    from ..core.manager import SYSTEM_ROOT
    from ..store.layout import SYSTEM_CONFIG

    old = SYSTEM_ROOT / "miniq.conf"
    if queue.root != SYSTEM_ROOT or not old.exists():
        return
    if queue.layout.conf == old:
        yield Finding(False, f"the system queue's configuration is in its place before 0.3, {old}",
                      f"mkdir -p {SYSTEM_CONFIG.parent} && mv {old} {SYSTEM_CONFIG}")  # fmt: skip
    else:
        yield Finding(False, f"{old} is not read: the system queue's configuration is {SYSTEM_CONFIG}",
                      f"merge it into {SYSTEM_CONFIG}, then rm {old}")  # fmt: skip


def _pauses(queue: Queue) -> Iterator[Finding]:
    """A pause is deliberate, but it is why jobs do not start: say so."""
    from ..store.pause import pauses

    for held in pauses(queue.layout):
        name = f" {held.name}" if held.name else ""
        yield Finding(False, f"{held.what} is paused (by {held.by} on {held.host} at {held.at}): its queued jobs are held, none starts",
                      f"miniq resume{name}")  # fmt: skip


def _systemd(manager: Manager) -> Generator[Finding, None, bool]:
    if importlib.util.find_spec("pystemd") is None:
        yield Finding(False, "pystemd is not installed, so jobs cannot get scopes",
                      "pip install pystemd (in miniq's environment), or apt-get install python3-pystemd")  # fmt: skip
        return False
    from ..systemd.dbus import Systemd

    try:
        Systemd(manager).close()
    except SystemdUnavailable as e:
        hint = (
            "log in as that user (or loginctl enable-linger USER) and make sure XDG_RUNTIME_DIR is set"
            if manager is Manager.USER
            else "miniq needs a running systemd and D-Bus system bus"
        )
        yield Finding(False, f"systemd cannot be reached: {e.message}", hint)
        return False
    yield Finding(True, f"the {manager.value} manager answers over D-Bus")
    return True


def _units(queue: Queue, manager: Manager) -> Iterator[Finding]:
    sysctl = " ".join(manager.systemctl())
    journal = f"journalctl {'--user ' if manager is Manager.USER else ''}-u miniq-process"
    states = {unit: _show(manager, unit) for unit in units_for(manager) if "@" not in unit}
    missing = [u for u, s in states.items() if s.get("LoadState") != "loaded"]
    if missing:
        yield Finding(False, f"units not installed: {', '.join(missing)}", f"miniq {manager.flag} install-units --now")
        return
    yield Finding(True, "the miniq units are installed")
    for unit in (*enable_for(manager), "miniq-process.service"):
        s = states[unit]
        if s.get("ActiveState") == "failed":
            why = _failure(unit, s.get("Result", ""))
            see = "journalctl -u miniq-api" if unit == "miniq-api.socket" else journal
            yield Finding(False, f"{unit} has failed: {why}", f"{sysctl} reset-failed {unit} && {sysctl} start {unit}; see: {see}")
        elif unit == "miniq-process.service":
            continue
        elif s.get("UnitFileState") not in ("enabled", "enabled-runtime", "static"):
            yield Finding(
                False, f"{unit} is not enabled, so it will not run after a reboot", f"{sysctl} enable --now {' '.join(enable_for(manager))}"
            )
        elif s.get("ActiveState") != "active":
            yield Finding(False, f"{unit} is not running", f"{sysctl} start {unit}")
        else:
            yield Finding(True, f"{unit} is enabled and active")
    if states.get("miniq-api.socket", {}).get("ActiveState") == "active":
        yield _helper_answers()
    watched = states["miniq-process.path"].get("Paths", "")
    expected = str(queue.layout.queue)
    if watched and not watched.startswith(expected + " "):
        yield Finding(False, f"miniq-process.path watches {watched.split(' ')[0]}, but this queue is {expected}",
                      f"miniq {manager.flag} --root {queue.root} install-units --now")  # fmt: skip


def _helper_answers() -> Finding:
    """An active socket says nothing of its helper: ask it (helper.ping)."""
    from ..serve.helper import ping

    try:
        return Finding(True, f"the system queue's helper answers ({ping()})")
    except SystemdUnavailable as e:
        return Finding(
            False, f"miniq-api.socket is active, but {e.message}",
            "see why with: systemctl status miniq-api.service; journalctl -u miniq-api; "
            "then: systemctl reset-failed miniq-api.service miniq-api.socket && systemctl restart miniq-api.socket",
        )  # fmt: skip


#: What a unit's Result= means, for people; by unit kind, then result.
_RESULTS = {
    "path": {
        "trigger-limit-hit": "it hit its trigger limit, because the queue stayed non-empty while the processor kept stopping",
    },
    "socket": {
        "trigger-limit-hit": "it hit its trigger limit: its helper was started too often in a short time",
        "service-start-limit-hit": "its helper, miniq-api.service, failed to start too often",
        "resources": "systemd could not create the socket (see the journal)",
    },
}


def _failure(unit: str, result: str) -> str:
    """Why ``unit`` failed, in words, with systemd's own result in parentheses."""
    kind = unit.rsplit(".", 1)[-1]
    text = _RESULTS.get(kind, {}).get(result)
    return f"{text} (result: {result})" if text else f"result: {result or 'unknown'}"


def _journal(manager: Manager) -> Iterator[Finding]:
    from ..systemd.logs import access_problem

    problem = access_problem()
    if problem:
        text, _, fix = problem.partition("; fix: ")
        yield Finding(False, f"you cannot read your jobs' output: {text}", fix)
    else:
        yield Finding(True, "you can read your jobs' output in the journal")


def _writable(queue: Queue) -> Iterator[Finding]:
    dirs = [d for d in queue.layout.all_dirs() if d != queue.layout.jobs]
    unwritable = [d for d in dirs if d.is_dir() and not os.access(d, os.W_OK)]
    if unwritable:
        yield Finding(False, f"the queue is not writable here: {', '.join(map(str, unwritable))}",
                      f"chown -R {os.getuid()} {queue.root} (or run miniq as its owner)")  # fmt: skip
    else:
        yield Finding(True, f"the queue root {queue.root} is writable")


def _privacy(queue: Queue) -> Iterator[Finding]:
    st = os.stat(queue.root)
    if os.geteuid() == 0 and st.st_uid == 0 and not st.st_mode & 0o001:
        yield Finding(False, f"other users cannot pass through {queue.root} (mode {stat.S_IMODE(st.st_mode):o}), so jobs run as "
                      "their submitters cannot reach their job types", f"chmod 711 {queue.root}")  # fmt: skip
    if st.st_mode & 0o006:
        yield Finding(False, f"the queue root {queue.root} is open to every user (mode {stat.S_IMODE(st.st_mode):o}): "
                      "anyone may read your jobs' arguments", f"chmod go-rwx {queue.root}")  # fmt: skip


def proc_hides_processes(mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether /proc hides other users' processes (hidepid=invisible or 2)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if left.split()[4:5] == ["/proc"] and right.split()[:1] == ["proc"]:
                    options = right.split()[2].split(",") if len(right.split()) > 2 else []
                    return any(o in ("hidepid=2", "hidepid=invisible", "hidepid=ptraceable") for o in options)
    except OSError:
        pass
    return False


def _proc_visibility(manager: Manager) -> Iterator[Finding]:
    """A system queue that serves users: may they see each other's jobs in /proc?"""
    if _show(manager, "miniq-api.socket").get("UnitFileState") not in ("enabled", "enabled-runtime"):
        return
    if proc_hides_processes():
        yield Finding(True, "/proc hides each user's processes from the others (hidepid)")
        return
    yield Finding(
        False,
        "/proc shows every process to every user, so users of the system queue can read each other's running jobs' "
        "command lines (arguments included) with ps",
        'mount -o remount,hidepid=invisible /proc, and add hidepid=invisible to /proc\'s line in /etc/fstab (README, "Shared servers")',
    )


def _claims(queue: Queue) -> Iterator[Finding]:
    from ..core.proc import Claimer
    from ..store.claims import stale_claims
    from ..store.clock import ServerClock
    from ..store.config import Config

    try:
        lease = Config.load(queue.root).lease
    except MiniqError as e:
        yield Finding(False, e.message, f"edit {queue.layout.conf}")
        lease = 60.0
    if not os.access(queue.layout.tmp, os.W_OK):
        return
    me = Claimer.current()
    clock = ServerClock(queue.layout, me.name)
    try:
        for stale in stale_claims(queue.layout, me, lease, clock):
            yield Finding(
                False,
                f"job {stale.id or stale.path.name} is held by {stale.host}, but {stale.why}; the next processor "
                "(started by the path unit, or the timer within a minute) will run it again",
                f"miniq requeue {stale.id} (to queue it again now)",
            )
    finally:
        clock.close()


def _job_types(queue: Queue) -> Iterator[Finding]:
    jobs = queue.layout.jobs
    if not jobs.is_dir():
        yield Finding(False, f"there are no job types: {jobs} does not exist", f"mkdir -p {jobs}")
        return
    types = sorted(p for p in jobs.iterdir() if p.name.endswith(".job"))
    bad = 0
    for path in types:
        finding = _type_problem(path)
        if finding is not None:
            bad += 1
            yield finding
    if types and not bad:
        yield Finding(True, f"{len(types)} job type(s), all usable")


def _type_problem(path: Path) -> Finding | None:
    """Why the job type at ``path`` would not run, as the worker checks it (jobtypes.py)."""
    from ..store.jobtypes import problem

    found = problem(path)
    return None if found is None else Finding(False, found.message, found.fix)
