"""``miniq doctor``: find what keeps a queue from working, and say how to fix it.

Each check yields a ``Finding``: ``ok`` with a short statement, or a problem
with a plain sentence and the command that fixes it.  Checks never change
anything.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import SystemdUnavailable
from .job import State
from .queue import Queue
from .settings import Manager
from .units import ENABLE, UNITS


@dataclass(frozen=True)
class Finding:
    ok: bool
    text: str
    fix: str = ""


def _systemctl(manager: Manager) -> list[str]:
    return ["systemctl", "--user"] if manager is Manager.USER else ["systemctl"]


def _show(manager: Manager, unit: str) -> dict[str, str]:
    props = "LoadState,ActiveState,UnitFileState,Result,Paths"
    proc = subprocess.run([*_systemctl(manager), "show", f"--property={props}", unit], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def check(queue: Queue, manager: Manager) -> Iterator[Finding]:
    """Run every check for ``queue`` as served by ``manager``."""
    flag = "--user " if manager is Manager.USER else ""
    sysctl = " ".join(_systemctl(manager))

    if importlib.util.find_spec("pystemd") is None:
        yield Finding(False, "pystemd is not installed, so jobs cannot get scopes",
                      "pip install pystemd (in miniq's environment), or apt-get install python3-pystemd")  # fmt: skip
        reachable = False
    else:
        from .scope import ScopeRunner

        try:
            ScopeRunner(manager)
            reachable = True
            yield Finding(True, f"the {manager.value} manager answers over D-Bus")
        except SystemdUnavailable as e:
            reachable = False
            hint = (
                "log in as that user (or loginctl enable-linger USER) and make sure XDG_RUNTIME_DIR is set"
                if manager is Manager.USER
                else "miniq needs a running systemd and D-Bus system bus"
            )
            yield Finding(False, f"systemd cannot be reached: {e.message}", hint)

    if reachable:
        states = {unit: _show(manager, unit) for unit in UNITS}
        missing = [u for u, s in states.items() if s.get("LoadState") != "loaded"]
        if missing:
            yield Finding(False, f"units not installed: {', '.join(missing)}", f"miniq {flag}install-units --now")
        else:
            yield Finding(True, "the miniq units are installed")
            for unit in ENABLE:
                s = states[unit]
                if s.get("ActiveState") == "failed":
                    why = s.get("Result", "")
                    if why == "trigger-limit-hit":
                        why = "it hit its trigger limit, because the queue stayed non-empty while the processor kept stopping"
                    yield Finding(False, f"{unit} has failed ({why})",
                                  f"{sysctl} reset-failed {unit} && {sysctl} start {unit}; "
                                  f"see: journalctl {'--user ' if manager is Manager.USER else ''}-u miniq-process")  # fmt: skip
                elif s.get("UnitFileState") not in ("enabled", "enabled-runtime", "static"):
                    yield Finding(False, f"{unit} is not enabled, so it will not run after a reboot",
                                  f"{sysctl} enable --now {' '.join(ENABLE)}")  # fmt: skip
                elif s.get("ActiveState") != "active":
                    yield Finding(False, f"{unit} is not running", f"{sysctl} start {unit}")
                else:
                    yield Finding(True, f"{unit} is enabled and active")
            watched = states["miniq-process.path"].get("Paths", "")
            expected = str(queue.dir(State.QUEUED))
            if watched and not watched.startswith(expected + " "):
                yield Finding(False, f"miniq-process.path watches {watched.split(' ')[0]}, but this queue is {expected}",
                              f"miniq {flag}--root {queue.root} install-units --now")  # fmt: skip

    if not queue.root.is_dir():
        yield Finding(False, f"the queue root {queue.root} does not exist",
                      f"mkdir -p {queue.jobs_dir} and put job types there (executables named NAME.job)")  # fmt: skip
        return
    unwritable = [d for d in (queue.root, *(queue.dir(s) for s in State), queue.tmp_dir) if d.is_dir() and not os.access(d, os.W_OK)]
    if unwritable:
        yield Finding(False, f"the queue is not writable here: {', '.join(map(str, unwritable))}",
                      f"chown -R {os.getuid()} {queue.root} (or run miniq as its owner)")  # fmt: skip
    else:
        yield Finding(True, f"the queue root {queue.root} is writable")
    if not queue.jobs_dir.is_dir():
        yield Finding(False, f"there are no job types: {queue.jobs_dir} does not exist", f"mkdir -p {queue.jobs_dir}")
        return
    types = sorted(p for p in queue.jobs_dir.iterdir() if p.name.endswith(".job"))
    for path in types:
        if not path.is_file() or not os.access(path, os.X_OK):
            yield Finding(False, f"job type '{path.name[:-4]}' is not executable", f"chmod +x {path}")
    if types and all(p.is_file() and os.access(p, os.X_OK) for p in types):
        yield Finding(True, f"{len(types)} job type(s), all executable")
