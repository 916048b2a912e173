"""Whether a job type can run: one check, used by enqueue, the worker and doctor.

A job type is ``ROOT/jobs/NAME.job``: any executable.  ``problem`` says why
one cannot run, as a ``Problem`` with a ``Kind`` and a detail, so every caller
decides by the kind and words it the same way (``message``), and doctor adds
the fix (``fix``).  The checks, in order: the file exists and is a regular
file (a symbolic link to one counts); it is executable; a root process
trusts it (users.py: root's, written only by root, up every directory and
link); its ``#!`` interpreter, if it names one, exists and is executable
(spawn.py: the shell gate cannot tell why an exec failed).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import NamedTuple


class Kind(enum.Enum):
    MISSING = "missing"
    NOT_EXECUTABLE = "not-executable"
    UNTRUSTED = "untrusted"
    NO_INTERPRETER = "no-interpreter"
    CARRIAGE_RETURN = "carriage-return"
    BAD_INTERPRETER = "bad-interpreter"


class Problem(NamedTuple):
    """Why job type ``name`` at ``path`` cannot run."""

    kind: Kind
    name: str
    path: Path
    detail: str = ""

    @property
    def message(self) -> str:
        """The one wording of this problem (enqueue's error, a not-started job's reason, doctor)."""
        name, path = self.name, self.path
        if self.kind is Kind.MISSING:
            return f"no job type '{name}': expected an executable at {path}"
        if self.kind is Kind.NOT_EXECUTABLE:
            return f"job type '{name}' is not executable: expected an executable at {path} (chmod +x it)"
        if self.kind is Kind.UNTRUSTED:
            return f"job type '{name}' is not trusted, so root will not run it: {self.detail}"
        return f"job type '{name}' cannot start: {self.detail}"

    @property
    def fix(self) -> str:
        """What makes it runnable (doctor)."""
        path = self.path
        if self.kind is Kind.MISSING:
            return f"put an executable at {path}"
        if self.kind is Kind.NOT_EXECUTABLE:
            return f"chmod +x {path}"
        if self.kind is Kind.UNTRUSTED:
            return f"make it root's and writable only by root, up every directory: chown root: {path} && chmod go-w {path}"
        if self.kind is Kind.CARRIAGE_RETURN:
            return f"sed -i 's/\\r$//' {path}"
        return f"install it, or name another in the first line of {path}"


def problem(path: Path, name: str | None = None, trust: bool | None = None) -> Problem | None:
    """Why the job type at ``path`` cannot run, or None if it can.

    ``trust``: check that root may trust it (default: when this process is root)."""
    name = name if name is not None else path.name[: -len(".job")] if path.name.endswith(".job") else path.name
    if not path.is_file():
        return Problem(Kind.MISSING, name, path)
    if not os.access(path, os.X_OK):
        return Problem(Kind.NOT_EXECUTABLE, name, path)
    if trust if trust is not None else os.geteuid() == 0:
        from ..core.users import untrusted_reason

        reason = untrusted_reason(path)
        if reason:
            return Problem(Kind.UNTRUSTED, name, path, reason)
    found = interpreter_problem(str(path))
    if found is not None:
        return Problem(found[0], name, path, found[1])
    return None


def interpreter_problem(exe: str) -> tuple[Kind, str] | None:
    """Why the ``#!`` interpreter of the executable ``exe`` cannot run, if it
    names one that is not there or not executable (spawn.py says why this is checked)."""
    try:
        fd = os.open(exe, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None  # not readable to us: the exec itself tells
    try:
        head = os.read(fd, 256)
    except OSError:
        return None
    finally:
        os.close(fd)
    if not head.startswith(b"#!"):
        return None
    # As the kernel reads it: up to the newline, words apart by spaces and tabs.
    interpreter = os.fsdecode(head[2:].split(b"\n", 1)[0].replace(b"\t", b" ").strip(b" ").split(b" ", 1)[0])
    if not interpreter.startswith("/"):
        return None  # empty, or relative to the working directory: left to the kernel
    if not os.path.exists(interpreter):
        if interpreter.endswith("\r"):
            return Kind.CARRIAGE_RETURN, (
                f"its #! line ends with a carriage return (Windows line ends), so it names {interpreter[:-1]}\\r, which does not exist"
            )
        return Kind.NO_INTERPRETER, f"its #! line names {interpreter}, which does not exist"
    if not os.access(interpreter, os.X_OK) or os.path.isdir(interpreter):
        return Kind.BAD_INTERPRETER, f"its #! line names {interpreter}, which is not an executable file"
    return None
