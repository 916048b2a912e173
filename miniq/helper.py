"""The client side of the system queue's helper: a user's ``miniq --system COMMAND``.

A user cannot write to the system queue (``/var/lib/miniq`` is root's), so
the CLI sends the command to the helper (server.py) over
``/run/miniq/api.socket`` and relays what comes back.  This module sits
below the CLI and imports none of it; the helper's server side sits above.

Wire format.  The client sends one line of JSON,
``{"argv": [...], "columns": N}``, at most ``MAX_REQUEST`` bytes, within
``REQUEST_TIMEOUT`` seconds of connecting.  The helper answers with frames:
one byte for the channel (``o`` standard output, ``e`` standard error, ``x``
the exit status, always last), a 4-byte big-endian length and the data.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from .errors import MiniqError, NotPermitted, SystemdUnavailable

SOCKET = Path("/run/miniq/api.socket")
SOCKET_UNIT = "miniq-api.socket"
#: The largest request the helper reads (a job's arguments fit in 1 MiB, files.py).
MAX_REQUEST = 2 * 1024 * 1024
#: Seconds the helper waits for a whole request after a client connected.
REQUEST_TIMEOUT = 5.0
#: What a user may ask of the system queue through the helper.
COMMANDS = frozenset({"enqueue", "list", "status", "show", "logs", "wait", "cancel", "retry", "purge", "stats"})
#: Requests asked again when the helper went away before answering at all
#: (restarted with its socket, say by a package upgrade): asking twice changes nothing.
SAFE_AGAIN = frozenset({"list", "status", "show", "logs", "wait", "stats"})
ATTEMPTS = 5


def frame(channel: bytes, data: bytes) -> bytes:
    return channel + struct.pack(">I", len(data)) + data


def exit_frame(code: int) -> bytes:
    return frame(b"x", struct.pack(">i", code))


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the helper closed the connection")
        data += chunk
    return data


def _socket_state() -> tuple[str, str] | None:
    """(ActiveState, Result) of the helper's socket unit, if systemd says."""
    try:
        proc = subprocess.run(
            ["systemctl", "show", "--property=ActiveState,Result", SOCKET_UNIT], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    props = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return props.get("ActiveState", ""), props.get("Result", "")


def _unreachable(error: OSError) -> SystemdUnavailable:
    state = _socket_state()
    if state is not None and state[0] == "failed":
        hint = (
            f"{SOCKET_UNIT} has failed ({state[1]}); an administrator restarts it with: "
            f"systemctl reset-failed {SOCKET_UNIT} && systemctl start {SOCKET_UNIT}"
        )
    elif state is not None and state[0] in ("inactive", ""):
        hint = f"{SOCKET_UNIT} is not running; an administrator enables it with: systemctl enable --now {SOCKET_UNIT}"
    else:
        hint = "an administrator can see why with: miniq --system doctor"
    return SystemdUnavailable(f"cannot reach the system queue's helper at {SOCKET}: {error.strerror}", hint=hint)


def call(argv: list[str]) -> int:
    """Run ``miniq --system ARGV`` through the helper; returns the exit code."""
    import shutil

    if argv and argv[0] not in COMMANDS:
        raise NotPermitted(
            f"'miniq --system {argv[0]}' is for root only",
            hint=f"users may {', '.join(sorted(COMMANDS - {'status'}))} in the system queue",
        )
    request = json.dumps({"argv": argv, "columns": shutil.get_terminal_size((100, 24)).columns}).encode() + b"\n"
    for attempt in range(ATTEMPTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(SOCKET))
        except OSError as e:
            sock.close()
            if attempt and argv[:1] and argv[0] in SAFE_AGAIN:
                time.sleep(0.2 * 2**attempt)  # the socket comes back with its helper
                continue
            raise _unreachable(e) from None
        with sock:
            try:
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before it read the request (too busy): its answer says why
            code = _relay(sock)
        if code is not None:
            return code
        if not argv or argv[0] not in SAFE_AGAIN or attempt == ATTEMPTS - 1:
            break
        time.sleep(0.2 * 2**attempt)
    raise MiniqError("the system queue's helper ended without an answer; see: journalctl -u miniq-api")


def _relay(sock: socket.socket) -> int | None:
    """Relay the answer; its exit code, or None if the helper went away before any of it."""
    sinks = {b"o": sys.stdout.buffer, b"e": sys.stderr.buffer}
    relayed = False
    while True:
        try:
            header = _recv_exactly(sock, 5)
            length = struct.unpack(">I", header[1:])[0]
            payload = _recv_exactly(sock, length)
        except (ConnectionError, OSError):
            if not relayed:
                return None
            raise MiniqError("the system queue's helper ended without an answer; see: journalctl -u miniq-api") from None
        relayed = True
        if header[:1] == b"x":
            return int(struct.unpack(">i", payload)[0])
        sink = sinks.get(header[:1])
        if sink is not None:
            sink.write(payload)
            sink.flush()
