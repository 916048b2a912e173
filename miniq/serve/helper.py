"""The client side of the system queue's helper: a user's ``miniq --system COMMAND``.

A user cannot write to the system queue (``/var/lib/miniq`` is root's), so
the CLI sends the command to the helper (server.py) over
``/run/miniq/api.socket`` and relays what comes back.  This module sits
below the CLI and imports none of it; the helper's server side sits above.

Wire format.  The client sends one line of JSON,
``{"argv": [...], "columns": N}``, at most ``MAX_REQUEST`` bytes, within
``REQUEST_TIMEOUT`` seconds of connecting (or ``{"hello": 1}``, which the
helper answers with its version: ``ping``, for doctor).  The helper answers
with frames: one byte for the channel (``a`` the request was read and is
being answered, sent at once; ``o`` standard output, ``e`` standard error,
``x`` the exit status, always last), a 4-byte big-endian length and the data.

A helper that cannot start (its executable gone, a broken drop-in) leaves
the socket listening while systemd tries again, a bounded number of times
(miniq-api.service); a client that connected meanwhile would wait forever.
So the client waits at most ``ANSWER_TIMEOUT`` seconds for the first frame
and then says what is wrong and the command that shows why (exit code 4);
once the ``a`` frame came, it waits as long as the request takes (a ``wait``).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from ..core.errors import MiniqError, NotPermitted, SystemdUnavailable

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
#: Seconds a client waits for the helper's first frame (module comment).
ANSWER_TIMEOUT = 15.0
SERVICE_UNIT = "miniq-api.service"


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


def _service_state() -> dict[str, str]:
    """ActiveState, SubState, Result and NRestarts of the helper's service, as systemd says."""
    try:
        proc = subprocess.run(
            ["systemctl", "show", "--property=ActiveState,SubState,Result,NRestarts", SERVICE_UNIT], capture_output=True, text=True,
            timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _silent() -> SystemdUnavailable:
    """The helper took the connection but said nothing within ``ANSWER_TIMEOUT``."""
    state = _service_state()
    shown = "unknown"
    if state:
        shown = f"{state.get('ActiveState', '?')} ({state.get('SubState', '?')}), {state.get('NRestarts', '?')} restarts"
    return SystemdUnavailable(
        f"the system queue's helper did not answer within {ANSWER_TIMEOUT:g} s; {SERVICE_UNIT} is {shown}",
        hint=f"an administrator can see why with: systemctl status {SERVICE_UNIT}; journalctl -u miniq-api; miniq --system doctor",
    )


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
            if attempt and attempt < ATTEMPTS - 1 and argv[:1] and argv[0] in SAFE_AGAIN:
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
    raise SystemdUnavailable(
        "the system queue's helper ended without an answer",
        hint=f"an administrator can see why with: systemctl status {SERVICE_UNIT}; journalctl -u miniq-api; miniq --system doctor",
    )


def _relay(sock: socket.socket, timeout: float | None = None) -> int | None:
    """Relay the answer; its exit code, or None if the helper went away before
    any of it.  The first frame must come within ``timeout`` seconds (module comment)."""
    # What the helper sends went through its face already (face.py): passed on as it is.
    sinks = {b"o": sys.stdout.buffer, b"e": sys.stderr.buffer}
    relayed = heard = False
    sock.settimeout(ANSWER_TIMEOUT if timeout is None else timeout)
    while True:
        try:
            header = _recv_exactly(sock, 5)
            length = struct.unpack(">I", header[1:])[0]
            payload = _recv_exactly(sock, length)
        except socket.timeout:
            raise _silent() from None
        except (ConnectionError, OSError):
            if not relayed:
                return None  # nothing reached the user: a request safe to ask again is asked again
            raise MiniqError("the system queue's helper ended without an answer; see: journalctl -u miniq-api") from None
        if not heard:
            sock.settimeout(None)  # it answers: as long as the request takes from here
            heard = True
        if header[:1] == b"a":
            continue
        relayed = True
        if header[:1] == b"x":
            return int(struct.unpack(">i", payload)[0])
        sink = sinks.get(header[:1])
        if sink is not None:
            sink.write(payload)
            sink.flush()


def ping(timeout: float = 10.0) -> str:
    """The helper's version, asked over its socket; ``SystemdUnavailable``
    (saying why) if it cannot be reached or does not answer within ``timeout``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(SOCKET))
            sock.sendall(json.dumps({"hello": 1}).encode() + b"\n")
        except OSError as e:
            raise _unreachable(e) from None
        answer = b""
        try:
            while True:
                header = _recv_exactly(sock, 5)
                payload = _recv_exactly(sock, struct.unpack(">I", header[1:])[0])
                if header[:1] == b"o":
                    answer += payload
                elif header[:1] == b"x":
                    return answer.decode("utf-8", "replace").strip()
        except socket.timeout:
            raise _silent() from None
        except (ConnectionError, OSError) as e:
            raise SystemdUnavailable(f"the system queue's helper closed the connection without an answer ({e})") from None
