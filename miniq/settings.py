"""Which queue a command means, and the per-installation configuration.

Resolution of the root, first match wins:
  1. ``--root DIR`` on the command line;
  2. ``MINIQ_ROOT`` in the environment;
  3. ``STATE_DIRECTORY`` (set by systemd for units with ``StateDirectory=``),
     joined with ``miniq`` unless it already ends in it;
  4. the default of the manager: ``/var/lib/miniq`` for the system manager,
     ``${XDG_STATE_HOME:-~/.local/state}/miniq`` for a user manager.

Resolution of the manager (which systemd runs the jobs' scopes):
  ``--system`` or ``--user``; otherwise a process started by a user manager
  (``MANAGERPID`` is set) means user; otherwise root means system and
  everyone else means user.  These are exactly the defaults the shipped units
  see, so the CLI and the units agree without configuration.

``<root>/miniq.conf`` (INI, optional) holds default limits for all jobs in
``[limits]``, per job type in ``[job:NAME]``, and processor options
(``allow-unconfined``, ``parallel``) in ``[processor]``.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput
from .limits import Limits


class Manager(enum.Enum):
    SYSTEM = "system"
    USER = "user"

    @property
    def flag(self) -> str:
        return f"--{self.value}"

    def default_root(self) -> Path:
        if self is Manager.SYSTEM:
            return Path("/var/lib/miniq")
        state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        return Path(state) / "miniq"


def detect_manager() -> Manager:
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


MAX_PARALLEL = 256


def parse_parallel(text: str, where: str = "") -> int:
    """Parse a number of jobs to run at once (1 to 256)."""
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_PARALLEL:
        raise BadInput(f"invalid parallelism {text!r}{where}: expected a whole number from 1 to {MAX_PARALLEL}")
    return int(text)


@dataclass(frozen=True)
class Config:
    """The contents of ``<root>/miniq.conf``."""

    limits: Limits = Limits()
    per_job: tuple[tuple[str, Limits], ...] = ()
    #: Run jobs without a scope when systemd cannot be reached (opt-in).
    allow_unconfined: bool = False
    #: How many jobs one processor runs at once; 1 keeps submission order strict.
    parallel: int = 1

    def limits_for(self, name: str) -> Limits:
        for job_name, limits in self.per_job:
            if job_name == name:
                return limits.over(self.limits)
        return self.limits

    @classmethod
    def load(cls, root: Path) -> Config:
        import configparser  # only the processor reads it; keep enqueue fast

        path = root / "miniq.conf"
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except FileNotFoundError:
            return cls()
        except (configparser.Error, UnicodeDecodeError) as e:
            raise BadInput(f"cannot read {path}: {e}") from None
        limits = Limits()
        per_job: list[tuple[str, Limits]] = []
        allow_unconfined = False
        parallel = 1
        for section in parser.sections():
            where = f" in [{section}] of {path}"
            options = dict(parser.items(section))
            if section == "limits":
                limits = Limits.parse(options, where)
            elif section.startswith("job:"):
                per_job.append((section[4:], Limits.parse(options, where)))
            elif section == "processor":
                for key, value in options.items():
                    if key == "allow-unconfined":
                        try:
                            allow_unconfined = parser.getboolean(section, key)
                        except ValueError:
                            raise BadInput(f"invalid value {value!r} for allow-unconfined{where}: expected yes or no") from None
                    elif key == "parallel":
                        parallel = parse_parallel(value, where)
                    else:
                        raise BadInput(f"unknown option {key!r}{where}: expected allow-unconfined or parallel")
            else:
                raise BadInput(f"unknown section [{section}] in {path}: expected [limits], [job:NAME] or [processor]")
        return cls(limits, tuple(per_job), allow_unconfined, parallel)
