"""``ROOT/miniq.conf``: defaults and policy of one queue (INI, optional).

Sections:
  ``[limits]``         default limits of every job
  ``[job:NAME]``       limits of one job type, and ``parallel``: how many
                       of its jobs run at once over every machine (slots.py)
  ``[user:NAME]``      limits (and ``max-queued``, ``max-connections``,
                       ``max-priority`` and the caps ``cap-LIMIT``) of one submitter
  ``[group:NAME]``     limits (and ``max-priority`` and ``cap-LIMIT``) of the members of a group
  ``[processor]``      ``parallel``, ``lease``, ``max-interruptions``, ``max-lost-runs``, ``linger``,
                       ``output-rate-limit``, ``allow-unconfined``, ``slice``,
                       ``prometheus-file``, ``rejected-retention``
  ``[access]``         system queue: ``group`` (only its members may submit),
                       ``max-queued``, ``max-connections``, ``max-priority``
                       and ``cap-LIMIT`` (each per user)

Limits merge most specific first: the job file, ``[job:NAME]``,
``[user:NAME]``, the first ``[group:NAME]`` the submitter belongs to, then
``[limits]``.  A user's highest priority is their ``[user:NAME]``
``max-priority``, else the highest of their groups', else ``[access]``'s
(default 0: only root queues above the default).  Caps (``cap-memory-max``,
``cap-cpu-quota``, ``cap-tasks-max``, ``cap-timeout``, ``cap-nice``: one per
limit of limits.py) are the most a user's job in the system queue may ask for
or be given (policy.py); a user's own ``[user:NAME]`` cap counts, else the most
generous of their groups', else ``[access]``'s.  ``cap-nice`` is the lowest
niceness (default 0: no user's job runs below it unless granted).  The file is read like any file of the queue (files.py), and in
the system queue it is trusted only when root owns it and only root can
write it (users.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from ..core.errors import BadInput
from ..core.files import Unusable, read_untrusted
from ..core.limits import LIMITS, Limits
from ..core.timeparse import parse_duration

if TYPE_CHECKING:
    import configparser

MAX_PARALLEL = 256

#: [processor] options: name -> (default, meaning), for doc checks and errors.
PROCESSOR_OPTIONS = {
    "parallel": "1",
    "lease": "60s",
    "max-interruptions": "3",
    "max-lost-runs": "20",
    "linger": "2s",
    "output-rate-limit": "10000/30s",
    "allow-unconfined": "no",
    "slice": "(the manager's default)",
    "prometheus-file": "(none)",
    "rejected-retention": "30d",
}


#: Per-user policy of the system queue: option -> (sections besides [access], lowest, highest).
POLICY = {
    "max-queued": (("user",), 0, 10**9),
    "max-connections": (("user",), 1, 4096),
    "max-priority": (("user", "group"), -1000, 1000),
}


def _whole_number(text: str) -> int | None:
    """``text`` as a whole number of at most 12 ASCII digits, or None."""
    return int(text) if re.fullmatch(r"\s*-?\d{1,12}\s*", text, re.ASCII) else None


def _policy(key: str, value: str, where: str) -> int:
    _, low, high = POLICY[key]
    number = _whole_number(value)
    if number is None or not low <= number <= high:
        raise BadInput(f"invalid {key} {value!r}{where}: expected a whole number from {low} to {high}")
    return number


def parse_count(text: str, what: str, low: int, high: int, where: str = "") -> int:
    number = _whole_number(text)
    if number is None or not low <= number <= high:
        raise BadInput(f"invalid {what} {text!r}{where}: expected a whole number from {low} to {high}")
    return number


def parse_parallel(text: str, where: str = "") -> int:
    """Parse a number of jobs to run at once (1 to 256)."""
    return parse_count(text, "parallelism", 1, MAX_PARALLEL, where)


def parse_rate(text: str, where: str = "") -> tuple[int, float] | None:
    """``10000/30s`` -> (10000 lines, 30.0 s); ``off`` -> None."""
    if text.strip().lower() in ("off", "no", "none", "0"):
        return None
    lines, slash, span = text.partition("/")
    if not slash:
        raise BadInput(f"invalid output-rate-limit {text!r}{where}: expected LINES/DURATION such as 10000/30s, or off")
    try:
        return parse_count(lines, "number of lines", 1, 10**9, where), parse_duration(span)
    except BadInput as e:
        raise BadInput(f"invalid output-rate-limit {text!r}{where}: {e.message}") from None


def _bool(parser: configparser.ConfigParser, section: str, key: str, where: str) -> bool:
    try:
        return parser.getboolean(section, key)
    except ValueError:
        raise BadInput(f"invalid value {parser.get(section, key)!r} for {key}{where}: expected yes or no") from None


_NONE: Mapping[str, Any] = MappingProxyType({})


class Config(NamedTuple):
    """The contents of ``ROOT/miniq.conf`` (a ``NamedTuple``, not a dataclass:
    see miniq/__init__.py)."""

    limits: Limits = Limits()
    per_job: Mapping[str, Limits] = _NONE
    per_user: Mapping[str, Limits] = _NONE
    per_group: Mapping[str, Limits] = _NONE
    #: How many jobs one processor runs at once; 1 keeps submission order strict.
    parallel: int = 1
    #: Job type -> how many of its jobs run at once over all processors and machines.
    type_parallel: Mapping[str, int] = _NONE
    #: Seconds a claim stays valid without renewal (README, "Several machines").
    lease: float = 60.0
    #: Runs that may end with their processor's death before the job is failed.
    max_interruptions: int = 3
    #: Runs that may be lost with their machine (a power cut, a reboot, a lost host) before the job is failed.
    max_lost_runs: int = 20
    #: Seconds the processor waits for more jobs once the queue is empty.
    linger: float = 2.0
    #: (lines, seconds) of job output a processor passes on, or None for no limit.
    output_rate_limit: tuple[int, float] | None = (10000, 30.0)
    #: Run jobs without a scope when systemd cannot be reached (opt-in).
    allow_unconfined: bool = False
    #: The slice job scopes go in (None: the manager's default, system.slice or app.slice).
    slice: str | None = None
    #: Where each processor run ends by writing ``miniq stats --prometheus`` (stats.py).
    prometheus_file: str | None = None
    #: Seconds rejected entries are kept in ``rejected/`` before a processor removes them.
    rejected_retention: float = 30 * 86400.0
    #: System queue: only members of this group may submit (None: everyone).
    access_group: str | None = None
    #: System queue: queued, delayed and running jobs per user (None: no cap).
    max_queued: int | None = None
    max_queued_per_user: Mapping[str, int] = _NONE
    #: System queue: requests a user may have open with the helper at once (None: the helper's default).
    max_connections: int | None = None
    max_connections_per_user: Mapping[str, int] = _NONE
    #: System queue: the highest priority a user may give (root: any).
    max_priority: int = 0
    max_priority_per_user: Mapping[str, int] = _NONE
    max_priority_per_group: Mapping[str, int] = _NONE
    #: System queue: the most a user's job may ask for or be given (``cap-LIMIT``), for every user, per user and per group.
    caps: Limits = Limits()
    caps_per_user: Mapping[str, Limits] = _NONE
    caps_per_group: Mapping[str, Limits] = _NONE

    def limits_for(self, name: str, user: str | None = None, groups: tuple[str, ...] = ()) -> Limits:
        """The default limits of job type ``name`` submitted by ``user``."""
        merged = self.limits
        for group in groups:
            if group in self.per_group:
                merged = self.per_group[group].over(merged)
                break
        if user is not None and user in self.per_user:
            merged = self.per_user[user].over(merged)
        if name in self.per_job:
            merged = self.per_job[name].over(merged)
        return merged

    def cap_for(self, user: str) -> int | None:
        return self.max_queued_per_user.get(user, self.max_queued)

    def connections_for(self, user: str) -> int | None:
        return self.max_connections_per_user.get(user, self.max_connections)

    def priority_cap(self, user: str, groups: tuple[str, ...] = ()) -> int:
        """The highest priority ``user`` may give a job in the system queue."""
        if user in self.max_priority_per_user:
            return self.max_priority_per_user[user]
        caps = [self.max_priority_per_group[g] for g in groups if g in self.max_priority_per_group]
        return max(caps) if caps else self.max_priority

    def caps_for(self, user: str, groups: tuple[str, ...] = ()) -> Limits:
        """The caps of ``user``'s jobs: their own section's, else the most
        generous of their groups', else ``[access]``'s; per limit."""
        from ..core.limits import LIMITS

        found = {}
        for spec in LIMITS:
            own = getattr(self.caps_per_user.get(user, Limits()), spec.attr)
            granted = [getattr(self.caps_per_group[g], spec.attr) for g in groups if g in self.caps_per_group]
            granted = [v for v in granted if v is not None]
            if own is not None:
                found[spec.attr] = own
            elif granted:
                found[spec.attr] = min(granted) if spec.lower_is_more else max(granted)
            else:
                found[spec.attr] = getattr(self.caps, spec.attr)
        return Limits(**found)

    @classmethod
    def load(cls, root: Path) -> Config:
        """Read ``root/miniq.conf``; ``BadInput`` naming the problem if it is wrong."""
        from .layout import config_path

        path = config_path(root)
        if os.geteuid() == 0 and os.path.lexists(path):
            from ..core.users import untrusted_reason

            problem = untrusted_reason(path)
            if problem:
                raise BadInput(f"{path} is not trusted, so root will not use it: {problem}")
        try:
            data, _ = read_untrusted(path, cap=256 * 1024)
            text = data.decode("utf-8")
        except FileNotFoundError:
            return cls()
        except Unusable as e:
            raise BadInput(f"cannot use {path}: {e.reason}") from None
        except UnicodeDecodeError:
            raise BadInput(f"cannot use {path}: it is not UTF-8") from None
        import configparser  # only for a queue that has a miniq.conf: a cold processor's start

        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(text, str(path))
        except configparser.Error as e:
            raise BadInput(f"cannot read {path}: {e}") from None
        return cls._parse(parser, path)

    @classmethod
    def _parse(cls, parser: configparser.ConfigParser, path: Path) -> Config:
        values: dict[str, object] = {}
        per: dict[str, dict[str, Limits]] = {"job": {}, "user": {}, "group": {}}
        caps: dict[str, dict[str, Limits]] = {"user": {}, "group": {}}
        policy: dict[str, dict[str, int]] = {}  # "max-queued/user" -> {name: value}
        type_parallel: dict[str, int] = {}
        for section in parser.sections():
            where = f" in [{section}] of {path}"
            options = dict(parser.items(section))
            kind, colon, name = section.partition(":")
            if section == "limits":
                values["limits"] = Limits.parse(options, where)
            elif colon and kind in per and name:
                if kind == "job" and "parallel" in options:
                    type_parallel[name] = parse_parallel(options.pop("parallel"), where)
                for key, (kinds, _, _) in POLICY.items():
                    if kind in kinds and key in options:
                        policy.setdefault(f"{key}/{kind}", {})[name] = _policy(key, options.pop(key), where)
                if kind in caps:
                    caps[kind][name] = _caps(options, where)
                per[kind][name] = Limits.parse(options, where)
            elif section == "processor":
                values.update(cls._processor(parser, options, where))
            elif section == "access":
                values.update(cls._access(options, where))
            else:
                raise BadInput(
                    f"unknown section [{section}] in {path}: expected [limits], [job:NAME], [user:NAME], "
                    "[group:NAME], [processor] or [access]"
                )
        return cls(
            per_job=per["job"], per_user=per["user"], per_group=per["group"], type_parallel=type_parallel,
            max_queued_per_user=policy.get("max-queued/user", {}),
            max_connections_per_user=policy.get("max-connections/user", {}),
            max_priority_per_user=policy.get("max-priority/user", {}),
            max_priority_per_group=policy.get("max-priority/group", {}),
            caps_per_user=caps["user"], caps_per_group=caps["group"],
            **values,  # type: ignore[arg-type]
        )  # fmt: skip

    @staticmethod
    def _processor(parser: configparser.ConfigParser, options: dict[str, str], where: str) -> dict[str, object]:
        values: dict[str, object] = {}
        for key, value in options.items():
            if key == "parallel":
                values["parallel"] = parse_parallel(value, where)
            elif key == "lease":
                values["lease"] = max(parse_duration(value), 1.0)
            elif key == "max-interruptions":
                values["max_interruptions"] = parse_count(value, "max-interruptions", 1, 1000, where)
            elif key == "max-lost-runs":
                values["max_lost_runs"] = parse_count(value, "max-lost-runs", 1, 1000, where)
            elif key == "linger":
                values["linger"] = parse_duration(value, allow_zero=True)
            elif key == "output-rate-limit":
                values["output_rate_limit"] = parse_rate(value, where)
            elif key == "allow-unconfined":
                values["allow_unconfined"] = _bool(parser, "processor", key, where)
            elif key == "slice":
                if not value.strip().endswith(".slice"):
                    raise BadInput(f"invalid slice {value!r}{where}: expected a slice unit name such as miniq.slice")
                values["slice"] = value.strip()
            elif key == "rejected-retention":
                values["rejected_retention"] = parse_duration(value, allow_zero=True)
            elif key == "prometheus-file":
                if not value.strip().startswith("/") or not value.strip().endswith(".prom"):
                    raise BadInput(f"invalid prometheus-file {value!r}{where}: expected an absolute path ending in .prom")
                values["prometheus_file"] = value.strip()
            else:
                raise BadInput(f"unknown option {key!r}{where}: expected one of {', '.join(PROCESSOR_OPTIONS)}")
        return values

    @staticmethod
    def _access(options: dict[str, str], where: str) -> dict[str, object]:
        values: dict[str, object] = {"caps": _caps(options, where)}
        for key, value in options.items():
            if key == "group":
                values["access_group"] = value.strip() or None
            elif key in POLICY:
                values[key.replace("-", "_")] = _policy(key, value, where)
            else:
                raise BadInput(f"unknown option {key!r}{where}: expected group, {', '.join(POLICY)} or cap-LIMIT ({', '.join(CAPS)})")
        return values


#: The cap options, one per limit (limits.py): ``cap-memory-max``...
CAPS = tuple(f"cap-{spec.key}" for spec in LIMITS)


def _caps(options: dict[str, str], where: str) -> Limits:
    """The ``cap-LIMIT`` options of a section, taken out of ``options``."""
    return Limits.parse({key[len("cap-") :]: options.pop(key) for key in list(options) if key.startswith("cap-")}, where, "cap-")
