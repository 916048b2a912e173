"""Starting a job's process: what it runs, as whom, and the gate before exec.

``ExecSpec`` is everything a runner needs to start a job: the executable and
arguments, a clean environment (like systemd-run gives: README, "The job's
environment"), the working directory, the limits, and the identity to run as
when a root processor runs another user's job.

``spawn_gated`` starts a child in its own session, with stdout and stderr
to pipes and no other descriptor of the processor, that waits on a pipe (the
gate): the job runs only once ``release`` writes to it, which the scope runner
does after systemd placed the child in the job's scope.  Closing the gate
unwritten (``abort``) makes the child exit without running anything.

The child is one of two kinds.  A job that runs as the processor's own user
and keeps its niceness gets the shell gate: ``/bin/sh`` started with
``posix_spawn`` (glibc's vfork), which changes to the job's directory, reads
the gate on its stdin and then execs the job with stdin from /dev/null.  A
fork of the processor costs it a copy of its page tables and, while the child
lives, a copy of every page it writes; the forked child then runs Python
before its exec and tears the copy down in it.  Draining trivial jobs at
parallel 1, the processor took 8.80 -> 7.51 ms per job with the shell gate
(medians of six alternating rounds of 500; NEWS.md).  A job run as another
user (a root processor), or with a niceness, gets a fork of the processor
that drops its credentials and sets ``no_new_privs`` and then its niceness
before it waits at the gate; only a niceness below 0 that the run gate
allowed (policy.py: ``cap-nice``) is set before the drop, since it takes
privilege.

Both start a job alike: its arguments, environment, working directory,
session, descriptors and signal dispositions (but for glibc's two internal
signals, 32 and 33, which its posix_spawn leaves ignored and no program can
catch through glibc).  A job file without a ``#!`` line and in no
binary format the kernel knows runs under ``/bin/sh``, as with ``execvp`` (and
cron, at and nq).  A fork that cannot exec the job reports why on a pipe
(``StartFailed``); the shell gate cannot, and exits 127 (not found) or 126
with the shell's message on the job's stderr.  So the worker checks before
either starts that the job's ``#!`` interpreter exists (jobtypes.py):
the one reason for a failed exec that a job type meets in practice.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import os
import pwd
import signal
from pathlib import Path
from typing import NamedTuple

from ..core import files
from ..core.limits import Limits
from ..core.users import Identity

ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"
PR_SET_NO_NEW_PRIVS = 38
SHELL = "/bin/sh"
#: A job starts with every signal at its default and none blocked, whatever the
#: processor ignores (Python: SIGPIPE, SIGXFSZ; nohup: SIGHUP; a shell's
#: background job: SIGINT, SIGQUIT) or blocks, as systemd starts a service.
RESET_SIGNALS = frozenset(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP}
#: The shell gate: $0 is the job's executable, $1 its working directory, then
#: its arguments; stdin is the gate.  cd sets PWD and OLDPWD, which go again.
GATE = 'cd -- "$1" && shift && read -r go && [ "$go" = g ] || exit 127; unset PWD OLDPWD; exec "$0" "$@" </dev/null'


class StartFailed(Exception):
    """The job could not be started; the message says why."""


class StartDelayed(StartFailed):
    """systemd did not start the job's scope in time (a busy host): nothing of
    the job ran, and it may run later; not the job's failure."""


@functools.lru_cache(maxsize=2)
def login_path(root: bool) -> str:
    """PATH for a login of that kind, from /etc/login.defs when it says."""
    key = "ENV_SUPATH" if root else "ENV_PATH"
    try:
        for line in Path("/etc/login.defs").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key and parts[1].startswith("PATH="):
                return parts[1][5:]
    except OSError:
        pass
    return ROOT_PATH if root else USER_PATH


@functools.lru_cache(maxsize=4)
def _own_identity(uid: int) -> Identity:
    entry = pwd.getpwuid(uid)
    return Identity(entry.pw_uid, entry.pw_gid, (), entry.pw_name, entry.pw_dir, entry.pw_shell or "/bin/sh")


def clean_environment(identity: Identity | None, extra: dict[str, str]) -> dict[str, str]:
    """The environment a job gets; nothing of the processor's leaks into it."""
    if identity is None:
        identity = _own_identity(os.getuid())
    env = {
        "PATH": login_path(identity.uid == 0),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": identity.home,
        "USER": identity.user,
        "LOGNAME": identity.user,
        "SHELL": identity.shell,
    }
    env.update(extra)
    return env


class ExecSpec(NamedTuple):
    """What to run, with what, as whom; passed to a runner."""

    exe: str
    argv: tuple[bytes, ...]
    env: dict[str, str]
    cwd: str
    limits: Limits = Limits()
    #: Drop to this user before exec (a root processor running a user's job).
    identity: Identity | None = None
    unit: str = ""
    description: str = ""
    extra_props: tuple[tuple[bytes, bytes, object], ...] = ()


class Gated(NamedTuple):
    """A child waiting at its gate."""

    pid: int
    stdout: int
    stderr: int
    gate: int
    #: Where a forked child says why its exec failed; None for the shell gate.
    report: int | None


_prctl = None


def _no_new_privs() -> None:
    assert _prctl is not None
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def _child(spec: ExecSpec, out_w: int, err_w: int, gate_r: int, rep_w: int) -> None:
    """In the child: never returns.  Keep this path short and free of surprises."""
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        # Out of the way first, so that no dup2 below overwrites a source.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (devnull, out_w, err_w, gate_r, rep_w)]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        # Everything else the processor had open (other jobs' pipes, D-Bus,
        # the journal) must not leak into the job, nor keep pipes alive.
        os.closerange(5, 1 << 20)
        os.set_inheritable(4, False)
        nice = spec.limits.nice
        if spec.identity is not None:
            if nice is not None and nice < 0:
                # Below 0 takes privilege: set while still root, and only
                # because the run gate (policy.py) checked it against what an
                # administrator granted this user (cap-nice).
                os.setpriority(os.PRIO_PROCESS, 0, nice)
            os.setgroups(list(spec.identity.groups))
            os.setgid(spec.identity.gid)
            os.setuid(spec.identity.uid)  # from root: drops every capability
            _no_new_privs()
        if nice is not None and (spec.identity is None or nice >= 0):
            os.setpriority(os.PRIO_PROCESS, 0, nice)  # as the user: what they may set themselves
        os.chdir(spec.cwd)
        for sig in RESET_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if os.read(3, 1) != b"g":
            os._exit(127)
        os.close(3)
        argv = [os.fsencode(spec.exe), *spec.argv]
        try:
            os.execve(spec.exe, argv, spec.env)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            os.execve(SHELL, [SHELL.encode(), *argv], spec.env)  # as execvp and the shell gate do
    except OSError as e:
        os.write(4, f"{e.strerror or e} ({spec.exe})".encode())
    except BaseException as e:  # noqa: BLE001 - report anything, never return
        os.write(4, repr(e).encode())
    finally:
        os._exit(127)


def spawn_gated(spec: ExecSpec) -> Gated:
    """Start a child that execs ``spec`` once released (module comment)."""
    if spec.identity is None and spec.limits.nice is None:
        return _shell_gate(spec)
    return _fork_gate(spec)


def _shell_gate(spec: ExecSpec) -> Gated:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    gate_r, gate_w = os.pipe()
    actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, gate_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited()]
    argv = [SHELL.encode(), b"-c", GATE.encode(), os.fsencode(spec.exe), os.fsencode(spec.cwd), *spec.argv]
    try:
        # glibc spawns with vfork.
        pid = os.posix_spawn(SHELL, argv, spec.env, file_actions=actions, setsid=True, setsigdef=RESET_SIGNALS, setsigmask=())
    except OSError as e:
        for fd in (out_r, err_r, gate_w):
            os.close(fd)
        raise StartFailed(f"{e.strerror or e} (starting {spec.exe} through {SHELL})") from None
    finally:
        for fd in (out_w, err_w, gate_r):
            os.close(fd)
    return Gated(pid, out_r, err_r, gate_w, None)


def _inherited() -> list[int]:
    """This process's descriptors from 3 up that a child would inherit: none
    of miniq's (PEP 446), but an embedding program's or a careless parent's
    may be.  The shell gate closes them in the child (the fork gate closes
    every descriptor from 5 up)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:
            continue  # the directory's own descriptor, closed by now
    return found


def _fork_gate(spec: ExecSpec) -> Gated:
    global _prctl
    if spec.identity is not None and _prctl is None:
        _prctl = files.libc().prctl
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    gate_r, gate_w = os.pipe()
    rep_r, rep_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child(spec, out_w, err_w, gate_r, rep_w)
    for fd in (out_w, err_w, gate_r, rep_w):
        os.close(fd)
    return Gated(pid, out_r, err_r, gate_w, rep_r)


def _read_report(fd: int | None) -> str:
    """What the child wrote before its exec (nothing once exec closed the pipe)."""
    if fd is None:
        return ""
    try:
        return files.read_all(fd).decode("utf-8", "replace")
    finally:
        os.close(fd)


def release(gated: Gated) -> None:
    """Let the gated child exec; ``StartFailed`` if exec failed."""
    try:
        os.write(gated.gate, b"g\n")
    except BrokenPipeError:
        pass
    os.close(gated.gate)
    report = _read_report(gated.report)
    if report:
        os.waitpid(gated.pid, 0)
        os.close(gated.stdout)
        os.close(gated.stderr)
        raise StartFailed(report)


def abort(gated: Gated, *more: int) -> str:
    """Kill a gated child that must not run (and ``more`` processes); return
    any error it reported."""
    os.close(gated.gate)
    report = _read_report(gated.report)
    for pid in (gated.pid, *more):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
    os.close(gated.stdout)
    os.close(gated.stderr)
    return report
