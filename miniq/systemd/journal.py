"""Where job output and miniq's events go: the systemd journal, or the console.

``JournalSink`` speaks journald's native protocol over its datagram socket
(the same protocol sd_journal_send uses), so every line carries structured
fields: ``MINIQ_JOB_ID``, ``MINIQ_JOB_NAME``, ``MINIQ_STREAM`` and, on
miniq's own entries, ``MINIQ_EVENT``.  journald attributes the entries to the
sending process's unit, i.e. to ``miniq-process.service``, so
``journalctl [--user] -u miniq-process`` shows all jobs interleaved by time
and ``journalctl MINIQ_JOB_ID=...`` one job.  A root processor running a
user's job sends that job's entries with the user's credentials, so journald
files them where the user can read them (README, "Shared servers").

``LineSplitter`` cuts a byte stream into lines; a line longer than
``MAX_LINE`` bytes becomes several entries (each marked ``MINIQ_PARTIAL=1``
except the last); bytes that are not UTF-8 are kept as backslash escapes.
"""

from __future__ import annotations

# The C module that socket.py wraps: importing socket.py costs a cold
# processor about 4 ms here (it builds IntEnums of every constant), and a
# datagram to journald needs none of it.  notify.py does the same.
import _socket
import os
import struct
from collections.abc import Callable
from typing import Protocol

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_LINE = 32 * 1024

# syslog priorities used for job output and events
INFO, NOTICE, WARNING, ERR = 6, 5, 4, 3
PRIORITY_OF_STREAM = {"stdout": INFO, "stderr": WARNING}


class Sink(Protocol):
    def send(self, message: bytes, priority: int, fields: dict[str, str], uid: int | None = None) -> None: ...


def _field(name: str, value: bytes) -> bytes:
    if b"\n" in value:
        # The binary-safe form: name, newline, 64-bit LE length, bytes, newline.
        return name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
    return name.encode() + b"=" + value + b"\n"


class JournalSink:
    """Sends entries to journald."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        self.sock.connect(path)
        # Large enough for MAX_LINE plus fields; journald raises its own buffer.
        self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, 8 * 1024 * 1024)
        self.pid = os.getpid()

    def send(self, message: bytes, priority: int, fields: dict[str, str], uid: int | None = None) -> None:
        parts = [_field("MESSAGE", message), _field("PRIORITY", str(priority).encode())]
        parts += [_field(k, v.encode("utf-8", "backslashreplace")) for k, v in fields.items()]
        data = b"".join(parts)
        if uid is None or uid == os.geteuid():
            self.sock.sendall(data)
            return
        # Root may say whose entry this is; journald files it by that uid.
        gid = uid_gid(uid)
        creds = struct.pack("iII", self.pid, uid, gid)
        self.sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_CREDENTIALS, creds)])


def uid_gid(uid: int) -> int:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return uid


class ConsoleSink:
    """Prints entries as ``[ID] line`` when miniq runs outside systemd."""

    def send(self, message: bytes, priority: int, fields: dict[str, str], uid: int | None = None) -> None:
        from ..core.face import say  # a job's output shown to a person: the one face

        job = fields.get("MINIQ_JOB_ID", "miniq")
        say(f"[{job}] " + message.decode("utf-8", "surrogateescape"), err=priority <= WARNING)


def default_sink() -> Sink:
    """The journal when systemd runs us (or it is reachable), else the console."""
    under_systemd = "JOURNAL_STREAM" in os.environ or "INVOCATION_ID" in os.environ
    if under_systemd and os.path.exists(JOURNAL_SOCKET):
        try:
            return JournalSink()
        except OSError:
            pass
    return ConsoleSink()


def text(data: bytes) -> bytes:
    """Job output as valid UTF-8: undecodable bytes become ``\\xNN``."""
    return data.decode("utf-8", "backslashreplace").encode("utf-8")


class LineSplitter:
    """Turns a byte stream into lines, without losing bytes.

    ``emit(chunk, partial)`` is called for every line, or piece of a line
    longer than ``MAX_LINE`` (then ``partial`` is True for all but the last).
    """

    def __init__(self, emit: Callable[[bytes, bool], None]) -> None:
        self.emit = emit
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self._line(line)
        while len(self.buf) >= MAX_LINE:
            chunk, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
            self.emit(text(chunk), True)

    def close(self) -> None:
        if self.buf:
            self._line(self.buf)
            self.buf = b""

    def _line(self, line: bytes) -> None:
        for start in range(0, max(len(line), 1), MAX_LINE):
            self.emit(text(line[start : start + MAX_LINE]), start + MAX_LINE < len(line))
