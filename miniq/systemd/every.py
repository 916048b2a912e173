"""Recurring jobs as systemd timers: ``miniq every CALENDAR NAME ARGS...``.

A schedule is a pair of units in the manager's unit directory
(``/etc/systemd/system`` or ``~/.config/systemd/user``), so an administrator
sees it in ``systemctl list-timers`` and ``systemctl cat``:

* ``miniq-every-ID.timer``: ``OnCalendar=CALENDAR``, ``Persistent=true`` (a
  run missed while the machine was off happens at the next boot),
  ``AccuracySec=1s`` (on time, like cron, rather than systemd's default of a
  minute late);
* ``miniq-every-ID.service``: a oneshot that runs ``miniq enqueue`` for the
  queue the schedule was made for, with ``--unique-key every:ID`` unless
  ``--stack`` was given: while the last run's job is queued, delayed or
  running, a firing adds nothing (exit code 7, a success for this unit).

The calendar is checked with ``systemd-analyze calendar`` before anything is
written.  ID is eight hex digits.  What ``--list`` shows comes from the units
(a comment line holding the schedule as JSON) and from systemd (next and last
trigger).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import BadInput, MiniqError
from ..core.manager import Manager
from .units import miniq_command, systemctl, unit_dir

PREFIX = "miniq-every-"
MARK = "# miniq-every: "
ID_RE = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class Every:
    """One schedule."""

    id: str
    calendar: str
    name: str
    argv: tuple[str, ...]
    root: str
    stack: bool = False

    @property
    def timer(self) -> str:
        return f"{PREFIX}{self.id}.timer"

    @property
    def service(self) -> str:
        return f"{PREFIX}{self.id}.service"

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id, "calendar": self.calendar, "name": self.name, "argv": list(self.argv), "root": self.root, "stack": self.stack,
        }  # fmt: skip


def quote(word: str) -> str:
    """One word of a unit's ``ExecStart=``, quoted so systemd passes it as is:
    C-style escapes inside double quotes, ``%`` and ``$`` doubled."""
    out = []
    for ch in word:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "%":
            out.append("%%")
        elif ch == "$":
            out.append("$$")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def check_calendar(calendar: str) -> str:
    """``calendar`` if systemd accepts it as ``OnCalendar=``; else ``BadInput``
    with systemd's words.  Returns systemd's normalized form."""
    if not calendar.strip() or not calendar.isprintable() or len(calendar) > 256:
        raise BadInput(f"invalid calendar {calendar!r}: expected a systemd calendar expression such as 'daily' or 'Mon *-*-* 03:00'")
    try:
        proc = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise MiniqError("cannot check the calendar: systemd-analyze is not installed") from None
    if proc.returncode != 0:
        why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "rejected"
        raise BadInput(
            f"invalid calendar {calendar!r}: {why}",
            hint="see 'man systemd.time' (CALENDAR EVENTS); try it with: systemd-analyze calendar 'daily'",
        )
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Normalized form":
            return value.strip()
    return calendar


def _units(every: Every, manager: Manager) -> dict[str, str]:
    command = miniq_command()
    flag = "--system" if manager is Manager.SYSTEM else "--user"
    args = [*command, flag, "--root", every.root, "enqueue"]
    if not every.stack:
        args += ["--unique-key", f"every:{every.id}"]
    args += [every.name, "--", *every.argv]
    exec_start = " ".join(quote(a) for a in args)
    mark = MARK + json.dumps(every.to_json())
    shown = f"{every.name} {' '.join(every.argv)}".strip()
    description = f"miniq: queue {shown} ({every.calendar})".replace("%", "%%")[:200]
    service = f"""{mark}
[Unit]
Description={description}
Documentation=man:miniq(1)

[Service]
Type=oneshot
ExecStart={exec_start}
# 7: a job of this schedule is still queued, delayed or running; nothing added.
SuccessExitStatus=7
"""
    timer = f"""{mark}
[Unit]
Description={description}
Documentation=man:miniq(1)

[Timer]
OnCalendar={every.calendar}
Persistent=true
AccuracySec=1s

[Install]
WantedBy=timers.target
"""
    return {every.service: service, every.timer: timer}


def add(manager: Manager, root: Path, calendar: str, name: str, argv: list[str], stack: bool = False) -> Every:
    """Install and start a schedule; returns it."""
    from ..store.layout import Layout
    from ..store.policy import Ask, Door, admit

    # What each firing will enqueue, judged now by the one gate (policy.py), as every firing is.
    admit(Layout(root), Door.EVERY, [Ask(name, tuple(argv))])
    normalized = check_calendar(calendar)
    every = Every(os.urandom(4).hex(), normalized, name, tuple(argv), str(root), stack)
    target = unit_dir(manager)
    target.mkdir(parents=True, exist_ok=True)
    for unit, text in _units(every, manager).items():
        tmp = target / f".{unit}.tmp"
        tmp.write_text(text)
        os.replace(tmp, target / unit)
    try:
        systemctl(manager, "daemon-reload")
        systemctl(manager, "enable", "--now", every.timer)
    except MiniqError:
        _remove_files(manager, every.id)
        raise
    return every


def _read(path: Path) -> Every | None:
    try:
        first = path.read_text().splitlines()[0]
        data = json.loads(first[len(MARK) :]) if first.startswith(MARK) else None
        if not isinstance(data, dict):
            return None
        return Every(str(data["id"]), str(data["calendar"]), str(data["name"]), tuple(str(a) for a in data["argv"]), str(data["root"]),
                     bool(data.get("stack", False)))  # fmt: skip
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def schedules(manager: Manager, root: Path | None = None) -> list[Every]:
    """Every schedule in the manager's unit directory (of queue ``root`` only, if given)."""
    target = unit_dir(manager)
    try:
        names = sorted(n for n in os.listdir(target) if n.startswith(PREFIX) and n.endswith(".timer"))
    except FileNotFoundError:
        return []
    found = [e for e in (_read(target / n) for n in names) if e is not None]
    return [e for e in found if root is None or e.root == str(root)]


def times(manager: Manager, every: Every) -> tuple[str, str]:
    """(next, last) trigger of a schedule as systemd shows them; "-" where none."""
    proc = subprocess.run(
        manager.systemctl("show", every.timer, "--property=NextElapseUSecRealtime,LastTriggerUSec"), capture_output=True, text=True
    )
    values = dict(line.partition("=")[::2] for line in proc.stdout.splitlines()) if proc.returncode == 0 else {}
    return values.get("NextElapseUSecRealtime", "").strip() or "-", values.get("LastTriggerUSec", "").strip() or "-"


def _remove_files(manager: Manager, every_id: str) -> list[Path]:
    target = unit_dir(manager)
    removed = []
    for suffix in (".timer", ".service"):
        path = target / f"{PREFIX}{every_id}{suffix}"
        if path.exists():
            path.unlink()
            removed.append(path)
    return removed


def remove(manager: Manager, every_id: str) -> Every:
    """Stop, disable and remove a schedule; a job it queued stays queued."""
    if not ID_RE.fullmatch(every_id):
        raise BadInput(f"invalid schedule id {every_id!r}: expected 8 hex digits as shown by miniq every --list")
    path = unit_dir(manager) / f"{PREFIX}{every_id}.timer"
    every = _read(path)
    if every is None:
        raise BadInput(f"no schedule {every_id}: expected {path} (see miniq every --list)")
    subprocess.run(manager.systemctl("disable", "--now", every.timer), capture_output=True)
    _remove_files(manager, every_id)
    systemctl(manager, "daemon-reload")
    return every
