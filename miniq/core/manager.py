"""Which systemd manager runs a queue, and which queue a command means.

Resolution of the manager (which systemd runs the jobs' scopes):
  ``--system`` or ``--user``; otherwise ``MINIQ_ROOT`` naming the system
  queue's root (as in a job of the system queue) means system; otherwise a process started by a user manager
  (``MANAGERPID`` is set) means user; otherwise root
  means system and everyone else means user.  These are exactly the defaults
  the shipped units see, so the CLI and the units agree without configuration.

Resolution of the root, first match wins:
  1. ``--root DIR`` on the command line;
  2. ``MINIQ_ROOT`` in the environment;
  3. ``STATE_DIRECTORY`` (set by systemd for units with ``StateDirectory=``),
     joined with ``miniq`` unless it already ends in it;
  4. the default of the manager: ``/var/lib/miniq`` for the system manager,
     ``${XDG_STATE_HOME:-~/.local/state}/miniq`` for a user manager.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path

SYSTEM_ROOT = Path("/var/lib/miniq")


class Manager(enum.Enum):
    SYSTEM = "system"
    USER = "user"

    @property
    def flag(self) -> str:
        """The option that selects this manager: ``--system`` or ``--user``."""
        return f"--{self.value}"

    def systemctl(self, *args: str) -> list[str]:
        """A systemctl command line for this manager."""
        return ["systemctl", *(["--user"] if self is Manager.USER else []), *args]

    def default_root(self) -> Path:
        if self is Manager.SYSTEM:
            return SYSTEM_ROOT
        state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        return Path(state) / "miniq"


def detect_manager() -> Manager:
    if os.environ.get("MINIQ_ROOT") and Path(os.environ["MINIQ_ROOT"]).absolute() == SYSTEM_ROOT:
        # The system queue's own root: a job of the system queue (its processor
        # sets MINIQ_ROOT) runs `miniq show` for the system queue, as its
        # user, through the helper (README, "Day two": follow-up jobs).
        return Manager.SYSTEM
    if os.environ.get("MANAGERPID"):
        return Manager.USER
    return Manager.SYSTEM if os.getuid() == 0 else Manager.USER


def resolve_root(manager: Manager, explicit: str | None = None) -> Path:
    """The queue root for a command; see the module comment for the order."""
    if explicit:
        return Path(explicit).absolute()
    if os.environ.get("MINIQ_ROOT"):
        return Path(os.environ["MINIQ_ROOT"]).absolute()
    state_dirs = os.environ.get("STATE_DIRECTORY")
    if state_dirs:
        first = Path(state_dirs.split(":")[0])
        return first if first.name == "miniq" else first / "miniq"
    return manager.default_root()


WANTS = {"miniq-process.path": "paths.target.wants", "miniq-process.timer": "timers.target.wants"}


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config"))


def search_dirs(manager: Manager) -> list[Path]:
    """Where a manager finds enablement links, most specific first."""
    if manager is Manager.SYSTEM:
        return [Path("/etc/systemd/system"), Path("/run/systemd/system"), Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")]
    return [config_home() / "systemd" / "user", Path("/etc/systemd/user"), Path("/run/systemd/user"), Path("/usr/lib/systemd/user")]


def enabled_units(manager: Manager) -> list[str]:
    """The units (path, timer) enabled to start the processor, from the
    enablement links on disk alone: cheap enough for every enqueue."""
    return [unit for unit, wants in WANTS.items() if any(os.path.lexists(d / wants / unit) for d in search_dirs(manager))]
