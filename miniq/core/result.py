"""How a run of a job ended: a typed ``Result`` with its own wording.

A finished record's ``result`` and every entry of ``attempts`` is a result.
On disk it is a JSON object (README, "The queue on disk"); in the code it is
this frozen value, with the predicates the processor and the CLI need:
whether it succeeded, whether it counts towards ``--retries``, how it reads
in one line, and which exit status ``miniq wait`` gives for it.
"""

from __future__ import annotations

import enum
import signal
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .timeparse import now_iso


class Outcome(enum.Enum):
    """How a run ended."""

    EXITED = "exited"  # the job's process exited on its own; see exit_code
    SIGNALED = "signaled"  # killed by a signal nobody in miniq sent
    OOM = "oom"  # killed by the kernel for exceeding MemoryMax
    TIMEOUT = "timeout"  # stopped by systemd after its time limit
    NOT_STARTED = "not-started"  # could not be started (see reason)
    REJECTED = "rejected"  # the job file itself was unusable (see reason)
    ERROR = "error"  # miniq itself failed while handling the job (see reason)
    CANCELLED = "cancelled"  # stopped or dropped by `miniq cancel`
    INTERRUPTED = "interrupted"  # its processor died, was stopped, or its machine was lost; see Cause


class Cause(enum.Enum):
    """Why a run was interrupted (``Result.cause``), and whether the job may be to blame.

    Only ``DIED`` counts toward ``max-interruptions``: the processor died
    while its machine kept running (the same boot and PID namespace judged it
    dead or its lease expired), which a job that kills or hangs its processor
    causes.  A machine lost (a power cut, a reboot, another machine or
    container took over) and a scope systemd did not start in time are the
    machine's misfortune: they count toward the larger ``max-lost-runs``, so
    a job still never runs forever.  A processor stopped on purpose (``systemctl
    stop``, a shutdown, an upgrade) counts toward neither."""

    DIED = "died"
    LOST = "lost"
    DELAYED = "delayed"
    STOPPED = "stopped"


# Exit statuses of `miniq wait` for jobs that did not simply exit (README).
WAIT_TIMEOUT = 124  # stopped at its time limit, like timeout(1)
WAIT_NOT_RUN = 125  # not started, rejected, dependency failed, or miniq error
WAIT_INTERRUPTED = 126  # its runs were interrupted max-interruptions times; not run again
WAIT_CANCELLED = 130
WAIT_OOM = 137  # 128 + SIGKILL, what a shell reports too
WAIT_GAVE_UP = 75  # `miniq wait --timeout` expired first (EX_TEMPFAIL)

_WAIT_STATUS = {
    Outcome.OOM: WAIT_OOM,
    Outcome.TIMEOUT: WAIT_TIMEOUT,
    Outcome.CANCELLED: WAIT_CANCELLED,
    Outcome.INTERRUPTED: WAIT_INTERRUPTED,
}
_INT_FIELDS = ("exit_code", "pid", "cpu_usec", "memory_peak", "max_rss", "oom_kills", "output_lines", "output_dropped")
_STR_FIELDS = ("signal", "reason", "started", "ended", "host", "unit", "run", "lost_host", "cause")


class Result(NamedTuple):
    """One run's end.  Only ``outcome`` is always set (a ``NamedTuple``, not a
    dataclass: see miniq/__init__.py)."""

    outcome: Outcome
    exit_code: int | None = None
    signal: str | None = None
    reason: str | None = None
    started: str | None = None
    ended: str | None = None
    duration: float | None = None
    host: str | None = None
    pid: int | None = None
    unit: str | None = None
    confined: bool | None = None
    limits: dict[str, Any] | None = None
    cpu_usec: int | None = None
    memory_peak: int | None = None
    max_rss: int | None = None
    oom_kills: int | None = None
    #: Lines of output the job wrote, and how many miniq had to drop.
    output_lines: int | None = None
    output_dropped: int | None = None
    #: The claim that made this run (README, "Several machines").
    run: str | None = None
    #: For an interrupted run: the host that held the job when it was lost.
    lost_host: str | None = None
    #: For an interrupted run: why (a ``Cause`` value); None in records of 0.3
    #: and before, which count as ``died``.
    cause: str | None = None
    #: Keys this version does not know, kept so that rewriting loses nothing.
    extra: Mapping[str, Any] = MappingProxyType({})

    @classmethod
    def unrun(cls, outcome: Outcome, reason: str, host: str, **more: Any) -> Result:
        """The result of a run that did not happen: not started, rejected, cancelled..."""
        return cls(outcome, reason=reason, host=host, ended=now_iso(), **more)

    # -- what it means ------------------------------------------------------

    @property
    def succeeded(self) -> bool:
        return self.outcome is Outcome.EXITED and self.exit_code == 0

    @property
    def counts_as_failure(self) -> bool:
        """Whether it uses up one of the job's ``--retries``.  An interrupted
        run was not the job's fault, so it does not."""
        return not self.succeeded and self.outcome is not Outcome.INTERRUPTED

    @property
    def counts_as_interruption(self) -> bool:
        """Whether it uses up one of ``max-interruptions``: its processor died
        while its machine kept running (``Cause``)."""
        return self.outcome is Outcome.INTERRUPTED and self.cause in (None, Cause.DIED.value)

    @property
    def counts_as_lost(self) -> bool:
        """Whether it uses up one of ``max-lost-runs``: its machine or its scope was lost (``Cause``)."""
        return self.outcome is Outcome.INTERRUPTED and self.cause in (Cause.LOST.value, Cause.DELAYED.value)

    @property
    def may_retry(self) -> bool:
        """Whether ``--retries`` applies: cancelled and rejected jobs never run again."""
        return not self.succeeded and self.outcome not in (Outcome.CANCELLED, Outcome.REJECTED, Outcome.INTERRUPTED)

    @property
    def wait_status(self) -> int:
        """The exit status ``miniq wait`` reports for a job that ended so."""
        if self.outcome is Outcome.EXITED:
            return self.exit_code or 0
        if self.outcome is Outcome.SIGNALED and self.signal:
            try:
                return 128 + int(signal.Signals[self.signal])
            except KeyError:
                return WAIT_NOT_RUN
        return _WAIT_STATUS.get(self.outcome, WAIT_NOT_RUN)

    def describe(self) -> str:
        """A one-line human account."""
        o = self.outcome
        if o is Outcome.EXITED:
            text = f"exit code {self.exit_code}"
        elif o is Outcome.SIGNALED:
            text = f"killed by {self.signal}"
        elif o is Outcome.OOM:
            text = f"killed for exceeding its memory limit ({self.signal or f'exit code {self.exit_code}'})"
        elif o is Outcome.TIMEOUT:
            text = "stopped after its time limit"
        elif o is Outcome.CANCELLED:
            text = "cancelled" + (f" ({self.reason})" if self.reason and self.reason != "cancelled" else "")
        else:
            text = f"{o.value}: {self.reason}"
        if self.duration is not None:
            text += f" after {self.duration:.3f} s"
        if self.output_dropped:
            text += f"; {self.output_dropped} line(s) of output dropped"
        return text

    # -- on disk --------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data["outcome"] = self.outcome.value
        for name, value in zip(self._fields[1:-1], self[1:-1]):  # between outcome and extra
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: Any) -> Result:
        """Read a result; ``ValueError`` naming what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("a result must be an object")
        try:
            outcome = Outcome(data.get("outcome"))
        except ValueError:
            raise ValueError(f"unknown outcome {data.get('outcome')!r}") from None
        values: dict[str, Any] = {"outcome": outcome}
        for key in _INT_FIELDS:
            if data.get(key) is not None:
                if isinstance(data[key], bool) or not isinstance(data[key], int):
                    raise ValueError(f"result field {key!r} must be a whole number")
                values[key] = data[key]
        for key in _STR_FIELDS:
            if data.get(key) is not None:
                if not isinstance(data[key], str):
                    raise ValueError(f"result field {key!r} must be a string")
                values[key] = data[key]
        if data.get("duration") is not None:
            if isinstance(data["duration"], bool) or not isinstance(data["duration"], (int, float)):
                raise ValueError("result field 'duration' must be a number")
            values["duration"] = float(data["duration"])
        if data.get("confined") is not None:
            values["confined"] = bool(data["confined"])
        if data.get("limits") is not None:
            if not isinstance(data["limits"], dict):
                raise ValueError("result field 'limits' must be an object")
            values["limits"] = data["limits"]
        if values.get("cause") is not None and values["cause"] not in {c.value for c in Cause}:
            raise ValueError(f"result field 'cause' must be one of {', '.join(c.value for c in Cause)}")
        known = set(cls._fields)
        values["extra"] = {k: v for k, v in data.items() if k not in known}
        return cls(**values)

    def but(self, **changes: Any) -> Result:
        return self._replace(**changes)


assert Result._fields[0] == "outcome" and Result._fields[-1] == "extra"  # to_json relies on it
