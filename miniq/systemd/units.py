"""Installing the shipped units for a pip- or pipx-installed miniq.

The files in ``units/`` are what a distribution package installs as they
are (``ExecStart=/usr/bin/miniq``, root ``%S/miniq``).  For any other
installation ``install`` rewrites two things: ``ExecStart=`` points at this
installation's ``miniq`` (a venv's bin is not on systemd's search path), and
the root in the service's environment and the path unit's watched directory
becomes the absolute root the CLI resolves.  The latter matters: systemd 252
resolves ``%S`` in a user manager to ``~/.config``, not ``$XDG_STATE_HOME``
(newer releases changed that), so only an explicit path guarantees that the
units and the CLI mean the same queue.  Everything else stays the shipped
text, so ``systemd-analyze verify`` on ``units/`` covers both.

"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

from ..core.errors import BadInput, MiniqError
from ..core.manager import Manager, config_home

UNITS = ("miniq-process.service", "miniq-process.path", "miniq-process.timer")
ENABLE = ("miniq-process.timer", "miniq-process.path")
#: The system queue's helper for users (server.py): system manager only.
API_UNITS = ("miniq-api.socket", "miniq-api.service")
#: Units of earlier releases that install removes: 0.2 started a helper per connection.
LEGACY_UNITS = ("miniq-api@.service",)


def units_for(manager: Manager) -> tuple[str, ...]:
    return UNITS + API_UNITS if manager is Manager.SYSTEM else UNITS


def enable_for(manager: Manager) -> tuple[str, ...]:
    return (*ENABLE, "miniq-api.socket") if manager is Manager.SYSTEM else ENABLE


DEFAULT_ROOT = "%S/miniq"


#: Where the Debian package ships the units, as they are in ``units/``.
PACKAGED_UNITS = Path("/usr/lib/systemd/system")


def shipped_dir() -> Path:
    """Where the unit templates are: inside the wheel, in a source checkout,
    or (the Debian package, which ships them once) the system's unit directory."""
    packaged = Path(str(resources.files("miniq"))) / "units"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "units"
    if checkout.is_dir():
        return checkout
    return PACKAGED_UNITS


def unit_dir(manager: Manager) -> Path:
    if manager is Manager.SYSTEM:
        return Path("/etc/systemd/system")
    return config_home() / "systemd" / "user"


def miniq_command() -> list[str]:
    """An absolute command line that runs this installation's miniq."""
    script = Path(sys.executable).parent / "miniq"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "miniq"]


def timer_calendar(period: str) -> str:
    """``OnCalendar=`` for a processor period such as 15s, 5min or 1h."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|sec|m|min|h)\s*", period)
    amount, unit = (int(m.group(1)), m.group(2)) if m else (0, "")
    if unit in ("s", "sec") and amount and 60 % amount == 0:
        return f"*:*:0/{amount}"
    if unit in ("m", "min") and amount and 60 % amount == 0:
        return f"*:0/{amount}"
    if unit == "h" and amount == 1:
        return "hourly"
    raise BadInput(f"invalid timer period {period!r}: expected seconds or minutes dividing 60 (e.g. 10s, 15s, 5min) or 1h")


def render(name: str, command: list[str], root: str = DEFAULT_ROOT, calendar: str | None = None) -> str:
    """The shipped unit ``name`` for this installation (module comment); the
    timer with a period ``calendar`` (``OnCalendar=``) besides its run after boot."""
    text = (shipped_dir() / name).read_text()
    if root != DEFAULT_ROOT:
        # systemd specifiers use '%': escape it in a literal path.
        text = text.replace(DEFAULT_ROOT, root.replace("%", "%%"))
    if calendar:
        text = text.replace("OnStartupSec=15s\n", f"OnStartupSec=15s\nOnCalendar={calendar}\n")  # on time: AccuracySec=1s
    exec_start = " ".join(shlex.quote(c).replace("%", "%%") for c in command)
    text = text.replace("ConditionFileIsExecutable=/usr/bin/miniq", f"ConditionFileIsExecutable={command[0].replace('%', '%%')}")
    return text.replace("ExecStart=/usr/bin/miniq ", f"ExecStart={exec_start} ")


def systemctl(manager: Manager, *args: str) -> None:
    cmd = manager.systemctl(*args)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MiniqError(f"'{' '.join(cmd)}' failed: {proc.stderr.strip() or proc.returncode}")


def install(
    manager: Manager, root: Path, make_root: Callable[[], object], now: bool = False, timer_period: str | None = None
) -> list[Path]:
    """Write the units for queue ``root``; with ``now``, enable and start them.

    ``make_root`` makes the queue's directories with their modes (``Queue.ensure_layout``),
    once the options are known to be valid and before the path unit would make them.
    A root on NFS gets a timer period of a minute unless ``timer_period``
    says otherwise: no inotify event tells of jobs other machines queue."""
    from ..core.files import on_nfs

    calendar = timer_calendar(timer_period) if timer_period else None
    make_root()
    if calendar is None and on_nfs(root):
        calendar = "minutely"
    target = unit_dir(manager)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in units_for(manager):
        path = target / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(render(name, miniq_command(), str(root), calendar))
        os.replace(tmp, path)
        written.append(path)
    for name in LEGACY_UNITS:
        (target / name).unlink(missing_ok=True)
    systemctl(manager, "daemon-reload")
    if now:
        systemctl(manager, "enable", "--now", *enable_for(manager))
    return written


def uninstall(manager: Manager) -> list[Path]:
    """Stop, disable and remove the units that ``install`` wrote."""
    target = unit_dir(manager)
    present = [target / n for n in (*units_for(manager), *LEGACY_UNITS) if (target / n).exists()]
    if present:
        names = [n for n in units_for(manager) if "@" not in n]
        subprocess.run(manager.systemctl("disable", "--now", *names), capture_output=True)
        for path in present:
            path.unlink()
        systemctl(manager, "daemon-reload")
    return present
