"""The system queue for every user: a socket-activated root helper.

A user cannot write to ``/var/lib/miniq`` (root's, ``0700``): ``miniq --system
COMMAND`` as a user connects to ``/run/miniq/api.socket`` instead.  systemd
starts one ``miniq serve`` per connection (``miniq-api@.service``, as root);
the kernel tells it who connected (``SO_PEERCRED``: uid, gid, and with
``SO_PEERGROUPS`` the groups), and that identity is the only one miniq
believes.  The helper runs the same command with the same code as a root
user would, but every job it touches must belong to the caller: a job file
is owned by its submitter (the helper gives it to them), and the processor
runs each job as the owner of its file (users.py).

Why a helper and not a drop directory like at(1) or Postfix's postdrop:
those need a setuid or setgid program for everything but submitting, and
miniq is Python, which cannot be setuid.  A drop directory would also leave
``list``, ``show``, ``logs``, ``wait`` and ``cancel`` to files users can read,
and root would have to write into directories users control.  With the
helper, users never touch the system queue's files at all, every request
is checked in one place, and peer credentials come from the kernel.

Wire format: the client sends one JSON line ``{"argv": [...], "columns": N}``
(at most 1 MiB); the helper answers with frames of one byte (``o`` stdout,
``e`` stderr, ``x`` exit code), a 4-byte big-endian length and the data.
"""

from __future__ import annotations

import grp
import io
import json
import os
import pwd
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MiniqError, NotPermitted, SystemdUnavailable

SOCKET = Path("/run/miniq/api.socket")
MAX_REQUEST = 1024 * 1024
SO_PEERGROUPS = 59
#: What a user may ask of the system queue through the helper.
COMMANDS = frozenset({"enqueue", "list", "status", "show", "logs", "wait", "cancel", "retry", "purge"})


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the kernel says: uid, primary gid and groups."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    pid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def group_names(self) -> tuple[str, ...]:
        names = []
        for gid in (self.gid, *self.groups):
            try:
                names.append(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return tuple(names)

    def may_see(self, owner: int) -> bool:
        return self.is_root or owner == self.uid

    def check(self, owner: int, job_id: str) -> None:
        """``NotPermitted`` unless the caller may act on a job owned by ``owner``."""
        if not self.may_see(owner):
            raise NotPermitted(f"job {job_id} belongs to another user; you may act only on your own jobs")


def peer(sock: socket.socket) -> Caller:
    """The caller on the other end of ``sock``, from the kernel."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    groups: tuple[int, ...] = ()
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
    except OSError:
        try:
            groups = tuple(os.getgrouplist(pwd.getpwuid(uid).pw_name, gid))
        except KeyError:
            pass
    return Caller(uid, gid, tuple(groups), pid)


# -- the helper side ----------------------------------------------------------


class _Framed(io.RawIOBase):
    """A write-only stream that sends what is written as frames of one channel."""

    def __init__(self, sock: socket.socket, channel: bytes) -> None:
        self.sock, self.channel = sock, channel

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if data:
            self.sock.sendall(self.channel + struct.pack(">I", len(data)) + data)
        return len(data)


def _stream(sock: socket.socket, channel: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(_Framed(sock, channel)), encoding="utf-8", errors="backslashreplace", line_buffering=True)


def _read_request(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise MiniqError(f"request larger than {MAX_REQUEST} bytes")
    request = json.loads(data or b"{}")
    argv = request.get("argv") if isinstance(request, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise MiniqError("malformed request: expected a JSON object with an argv list of strings")
    return dict(request)


def serve(fd: int = 0) -> int:
    """Answer one connection (``miniq serve``, run by miniq-api@.service)."""
    sock = socket.socket(fileno=os.dup(fd))
    caller = peer(sock)
    out, err = _stream(sock, b"o"), _stream(sock, b"e")
    code = 1
    try:
        request = _read_request(sock)
        argv = request["argv"]
        if argv[0] not in COMMANDS:
            raise NotPermitted(f"'miniq --system {argv[0]}' is for root only")
        if isinstance(request.get("columns"), int):
            os.environ["COLUMNS"] = str(max(20, min(request["columns"], 1000)))
        code = _run(argv, caller, out, err)
    except MiniqError as e:
        err.write(f"Error: {e.message}\n")
        code = e.exit_code
    except (ValueError, OSError) as e:
        err.write(f"Error: malformed request: {e}\n")
        code = 2
    finally:
        for stream in (out, err):
            try:
                stream.flush()
            except OSError:
                pass
        try:
            sock.sendall(b"x" + struct.pack(">I", 4) + struct.pack(">i", code))
        except OSError:
            pass
    return 0


def _run(argv: list[str], caller: Caller, out: io.TextIOWrapper, err: io.TextIOWrapper) -> int:
    from .cli import main

    sys.stdout, sys.stderr = out, err
    try:
        code = main.main(args=["--system", *argv], prog_name="miniq", standalone_mode=False, obj=caller)
        return code if isinstance(code, int) else 0  # click returns the status of ctx.exit() here
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # noqa: BLE001 - click's own errors (usage) and the like
        from click.exceptions import ClickException, Exit

        if isinstance(e, Exit):
            return int(e.exit_code)
        if isinstance(e, ClickException):
            e.show(file=err)
            return e.exit_code
        raise
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


# -- the client side ----------------------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the helper closed the connection")
        data += chunk
    return data


def call(argv: list[str]) -> int:
    """Run ``miniq --system ARGV`` through the helper; returns the exit code."""
    import shutil

    if argv and argv[0] not in COMMANDS:
        raise NotPermitted(
            f"'miniq --system {argv[0]}' is for root only",
            hint=f"users may {', '.join(sorted(COMMANDS - {'status'}))} in the system queue",
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(str(SOCKET))
    except OSError as e:
        raise SystemdUnavailable(
            f"cannot reach the system queue's helper at {SOCKET}: {e.strerror}",
            hint="an administrator enables it with: systemctl enable --now miniq-api.socket",
        ) from None
    with sock:
        sock.sendall(json.dumps({"argv": argv, "columns": shutil.get_terminal_size((100, 24)).columns}).encode() + b"\n")
        sinks = {b"o": sys.stdout.buffer, b"e": sys.stderr.buffer}
        while True:
            try:
                header = _recv_exactly(sock, 5)
            except ConnectionError:
                raise MiniqError("the system queue's helper ended without an answer; see: journalctl -u 'miniq-api@*'") from None
            length = struct.unpack(">I", header[1:])[0]
            payload = _recv_exactly(sock, length)
            if header[:1] == b"x":
                return int(struct.unpack(">i", payload)[0])
            sink = sinks.get(header[:1])
            if sink is not None:
                sink.write(payload)
                sink.flush()
