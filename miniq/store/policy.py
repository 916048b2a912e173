"""The one gate: what may enter a queue, and what a job is given when it starts.

Every path that puts a job into a queue or back into it passes ``admit``; a
``Door`` names each: ``enqueue`` (the CLI, the helper, the library), a batch
from standard input, ``retry``, ``requeue``, a follow-up job, and ``every``
(checked when the schedule is made; each firing is an ``enqueue``).  What
``admit`` returns, an ``Admitted``, is what the functions that write a job
into ``queue/`` or ``delayed/`` take, and tests/test_policy.py lists every
place that does so: a new path cannot skip the gate.  Moves of a job that
was admitted already (a retry's backoff, an interrupted run's, promotion of a
due or held job) pass ``at_start`` instead, which the processor runs before
it starts any job: the rules that depend on who the owner is now are checked
again there, since groups and miniq.conf change while jobs wait.

A job runs with its *owner's* rights: the uid the kernel names (the helper's
peer on its socket, the owner of a job file), with the user's name and groups
from the system's databases; never what a file or request says.  Whoever asks
(alice herself, root retrying her job, the processor queuing her follow-up),
the rules are the owner's.

The rules, in the order ``admit`` checks them:

1. Values in range, in every queue, for everyone (``BadInput``, exit 2): a
   job name, arguments a program can receive (job.py), every limit within
   its range (limits.py), a priority from -1000 to 1000, a due time from 1970
   to ten years from now, at most 100 retries and 64 dependencies with valid
   ids, a unique key of printable characters.
2. The job type and the follow-up types can run (jobtypes.py; exit 2).
3. In a shared queue (this process is root, the owner is not; ``NotPermitted``,
   exit 5): the owner is in ``[access] group``; the priority is at most their
   ``max-priority``; no limit asks for more than their cap (``cap-LIMIT``,
   config.py; niceness below 0 only where ``cap-nice`` grants it); and they
   hold fewer than ``max-queued`` unfinished jobs.
4. In a user's own queue: a niceness below 0 only as far as their
   ``RLIMIT_NICE`` allows (exit 5); the job would fail to start otherwise.

``at_start`` checks rule 2 again, and in a shared queue the group, and gives
the limits the job runs with: the job's own over miniq.conf's defaults, then
held to the owner's caps (a limit left unset gets the cap; niceness never
below ``cap-nice``, 0 unless granted).
"""

from __future__ import annotations

import enum
import os
import resource
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from ..core.errors import BadInput, NotPermitted
from ..core.job import MAX_UNIQUE, Job, State, check_argv, check_name, user_name
from ..core.limits import LIMITS, Limits
from ..core.schedule import MAX_AFTER, MAX_PRIORITY, MAX_RETRIES, MIN_PRIORITY, Schedule
from .layout import Layout, is_id

if TYPE_CHECKING:
    from .config import Config


class Door(enum.Enum):
    """Every way a job enters a queue or goes back into it (module comment)."""

    ENQUEUE = "enqueue"
    BATCH = "enqueue --stdin"
    RETRY = "retry"
    REQUEUE = "requeue"
    FOLLOW_UP = "follow-up"
    EVERY = "every"


class Owner(NamedTuple):
    """Whose job it is: it runs with their rights (module comment)."""

    uid: int
    user: str
    groups: tuple[str, ...]

    @classmethod
    def of(cls, uid: int) -> Owner:
        """The owner with this uid, their name and groups from the system's databases."""
        import grp
        import pwd

        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return cls(uid, str(uid), ())
        names = []
        for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return cls(uid, entry.pw_name, tuple(dict.fromkeys(names)))

    @classmethod
    def current(cls) -> Owner:
        """This process's user, without the group database (no policy needs it then)."""
        uid = os.geteuid()
        return cls(uid, user_name(uid), ())

    @property
    def is_root(self) -> bool:
        return self.uid == 0


class Ask(NamedTuple):
    """What a job asks for: everything ``admit`` judges."""

    name: str
    argv: tuple[str, ...] = ()
    limits: Limits = Limits()
    schedule: Schedule = Schedule()
    follow_ups: tuple[str, ...] = ()
    unique: str | None = None

    @classmethod
    def of(cls, job: Job) -> Ask:
        follow_ups = tuple(f for f in (job.on_success, job.on_failure) if f is not None)
        return cls(job.name, job.argv, job.limits, job.schedule, follow_ups, job.unique)


class Admitted(NamedTuple):
    """What passed the gate: the only thing writers of ``queue/`` and ``delayed/`` take."""

    door: Door
    owner: Owner
    asks: tuple[Ask, ...]


def shared(owner: Owner) -> bool:
    """Whether the owner's jobs are judged by the queue's policy (rule 3):
    this process acts as root (the helper, a root processor or command) for
    a job that is not root's."""
    return os.geteuid() == 0 and not owner.is_root


def admit(
    layout: Layout,
    door: Door,
    asks: Sequence[Ask],
    owner: Owner | None = None,
    config: Config | None = None,
    counted: str | None = None,
    now: float | None = None,
) -> Admitted:
    """Judge ``asks`` (all or none) for ``owner`` (default: this process's user)
    entering ``layout``'s queue by ``door``; ``BadInput`` or ``NotPermitted``
    naming the first rule broken.  ``counted``: the id of a job that is
    unfinished already and comes back (requeue), not counted against
    ``max-queued`` again."""
    owner = owner or Owner.current()
    now = time.time() if now is None else now
    for number, ask in enumerate(asks, 1):
        try:
            check_values(ask, now)
        except BadInput as e:
            raise BadInput(f"job {number}: {e.message}; nothing was queued" if len(asks) > 1 else e.message, e.hint) from None
    for kind in dict.fromkeys(k for ask in asks for k in (ask.name, *ask.follow_ups)):
        check_type(layout, kind)
    if shared(owner):
        if config is None:
            from .config import Config

            config = Config.load(layout.root)
        _check_policy(layout, config, door, asks, owner, counted)
    elif not owner.is_root:
        floor = own_nice_floor()
        for ask in asks:
            if ask.limits.nice is not None and ask.limits.nice < floor:
                raise NotPermitted(
                    f"niceness {ask.limits.nice} is below {floor}, the lowest you may set (RLIMIT_NICE)",
                    hint="only root, or a user granted a higher RLIMIT_NICE in /etc/security/limits.conf, may run jobs below 0",
                )
    return Admitted(door, owner, tuple(asks))


def check_values(ask: Ask, now: float) -> None:
    """Rule 1: ``BadInput`` unless every value of ``ask`` is in its range."""
    from ..core.timeparse import MAX_AHEAD

    check_name(ask.name)
    for follow in ask.follow_ups:
        check_name(follow)
    check_argv(ask.argv)
    for spec in LIMITS:
        value = getattr(ask.limits, spec.attr)
        if value is not None:
            try:
                spec.check(value)
            except ValueError as e:
                raise BadInput(f"invalid {spec.key}: {e}") from None
    s = ask.schedule
    if isinstance(s.priority, bool) or not isinstance(s.priority, int) or not MIN_PRIORITY <= s.priority <= MAX_PRIORITY:
        raise BadInput(f"invalid priority {s.priority!r}: expected a whole number from {MIN_PRIORITY} to {MAX_PRIORITY}")
    if isinstance(s.retries, bool) or not isinstance(s.retries, int) or not 0 <= s.retries <= MAX_RETRIES:
        raise BadInput(f"invalid retries {s.retries!r}: expected a whole number from 0 to {MAX_RETRIES}")
    if s.not_before is not None and not 0 <= s.not_before <= now + MAX_AHEAD:
        raise BadInput("invalid start time: expected a time from 1970 to 10 years from now")
    if len(s.after) > MAX_AFTER:
        raise BadInput(f"too many dependencies ({len(s.after)}): at most {MAX_AFTER}")
    for dep in s.after:
        if not is_id(dep):
            from ..core.face import visible

            raise BadInput(f"invalid job id '{visible(dep)[:64]}' for --after: expected an id as printed by miniq enqueue")
    if ask.unique is not None:
        check_key(ask.unique)


def check_key(key: str) -> str:
    """``key`` if it can be a unique key, else ``BadInput``."""
    if not 0 < len(key) <= MAX_UNIQUE or not key.isprintable():
        raise BadInput(f"invalid unique key: expected 1 to {MAX_UNIQUE} printable characters")
    return key


def check_type(layout: Layout, name: str) -> None:
    """Rule 2: ``BadInput`` unless job type ``name`` can run here."""
    from .jobtypes import problem

    found = problem(layout.job_type(check_name(name)), name)
    if found is not None:
        raise BadInput(found.message)


def _check_policy(layout: Layout, config: Config, door: Door, asks: Sequence[Ask], owner: Owner, counted: str | None) -> None:
    """Rule 3 (module comment)."""
    conf = layout.conf
    # Said to the user who asked, or of the owner in the processor's log (a follow-up) and to root.
    you, have, whose = ("you", "have", "your") if door in (Door.ENQUEUE, Door.BATCH, Door.RETRY) else (owner.user, "has", f"{owner.user}'s")
    reason = access_problem(config, owner, conf)
    if reason:
        raise NotPermitted(reason)
    highest = config.priority_cap(owner.user, owner.groups)
    for ask in asks:
        if ask.schedule.priority > highest:
            raise NotPermitted(
                f"priority {ask.schedule.priority} is above the highest {'you may' if you == 'you' else you + ' may'} give "
                f"in the system queue ({highest})",
                hint=f"an administrator may allow more with max-priority in [user:{owner.user}] or [access] of {conf}",
            )
    caps = config.caps_for(owner.user, owner.groups)
    for ask in asks:
        for spec in LIMITS:
            asked, cap = getattr(ask.limits, spec.attr), getattr(caps, spec.attr)
            if spec.attr == "nice" and cap is None:
                cap = 0  # below 0 takes privilege: only where granted
            if asked is not None and cap is not None and spec.more_than(asked, cap):
                bound = "lowest" if spec.lower_is_more else "most"
                raise NotPermitted(
                    f"--{spec.key} {spec.show(asked)} is over what the system queue gives {whose} jobs: the {bound} is {spec.show(cap)}",
                    hint=f"an administrator may allow more with cap-{spec.key} in [user:{owner.user}], [group:NAME] or [access] of {conf}",
                )
    cap_queued = config.cap_for(owner.user)
    if cap_queued is not None:
        held = unfinished(layout, owner.uid, counted)
        if held + len(asks) > cap_queued:
            raise NotPermitted(
                f"{you} {have} {held} jobs queued, delayed or running, the most the system queue takes from one user "
                f"({cap_queued}); wait for some to finish",
                hint=f"an administrator may allow more with max-queued in [user:{owner.user}] or [access] of {conf}",
            )


def access_problem(config: Config, owner: Owner, conf: object) -> str | None:
    """Why ``owner`` may not have jobs in the shared queue, if they may not."""
    if config.access_group and config.access_group not in owner.groups:
        return f"the system queue takes jobs only from members of group '{config.access_group}' ([access] group in {conf})"
    return None


def unfinished(layout: Layout, uid: int, counted: str | None = None) -> int:
    """How many jobs of ``uid`` are queued, delayed or running (``counted`` left out)."""
    total = 0
    for state in (State.QUEUED, State.DELAYED, State.RUNNING):
        directory = layout.dir(state)
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith(".") or (counted is not None and counted in entry.name):
                        continue
                    try:
                        if entry.stat(follow_symlinks=False).st_uid == uid:
                            total += 1
                    except OSError:
                        continue
        except FileNotFoundError:
            continue
    return total


def own_nice_floor() -> int:
    """The lowest niceness this (unprivileged) user may set: 20 - RLIMIT_NICE, and never below 0 without it."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY:
        return -20
    return min(0, 20 - soft) if soft > 0 else 0


# -- when a job starts ------------------------------------------------------------


def at_start(layout: Layout, config: Config, owner: Owner, job: Job) -> Limits | str:
    """The limits ``job`` of ``owner`` runs with, or why it must not start
    (module comment): the job type, the owner's access, their caps."""
    from .jobtypes import problem

    found = problem(layout.job_type(job.name), job.name)
    if found is not None:
        return found.message
    limits = job.limits.over(config.limits_for(job.name, owner.user, owner.groups))
    if not shared(owner):
        return limits
    reason = access_problem(config, owner, layout.conf)
    if reason:
        return f"not run: its owner {owner.user} may no longer use the system queue: {reason}"
    return held_to(limits, config.caps_for(owner.user, owner.groups))


def held_to(limits: Limits, caps: Limits) -> Limits:
    """``limits`` within ``caps``: a limit over its cap, or unset where a cap
    is set, becomes the cap; niceness never below the cap (0 unless granted)."""
    values = {}
    for spec in LIMITS:
        value, cap = getattr(limits, spec.attr), getattr(caps, spec.attr)
        if spec.attr == "nice":
            floor = 0 if cap is None else cap
            values[spec.attr] = (floor if floor > 0 else None) if value is None else max(value, floor)
        elif cap is not None:
            values[spec.attr] = cap if value is None or spec.more_than(value, cap) else value
        else:
            values[spec.attr] = value
    return Limits(**values)
