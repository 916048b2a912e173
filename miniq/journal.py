"""Where job output goes: the systemd journal, or the console.

``JournalSink`` speaks journald's native protocol over its datagram socket
(the same protocol sd_journal_send uses), so every line carries structured
fields: ``MINIQ_JOB_ID``, ``MINIQ_JOB_NAME``, ``MINIQ_STREAM`` and, on the
start and finish entries, ``MINIQ_EVENT``.  journald attributes the entries to
the sending process's unit, i.e. to ``miniq-process.service``, so
``journalctl [--user] -u miniq-process`` shows all jobs interleaved by time
and ``journalctl MINIQ_JOB_ID=...`` one job.

A line longer than ``MAX_LINE`` bytes is cut into several entries (each
marked ``MINIQ_PARTIAL=1`` except the last); bytes that are not UTF-8 are
kept as backslash escapes.  Nothing a job prints is dropped.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from typing import Any, Protocol

JOURNAL_SOCKET = "/run/systemd/journal/socket"
MAX_LINE = 32 * 1024

# syslog priorities used for job output and events
INFO, NOTICE, WARNING, ERR = 6, 5, 4, 3
PRIORITY_OF_STREAM = {"stdout": INFO, "stderr": WARNING}


class Sink(Protocol):
    def send(self, message: bytes, priority: int, fields: dict[str, str]) -> None: ...


def _field(name: str, value: bytes) -> bytes:
    if b"\n" in value:
        # The binary-safe form: name, newline, 64-bit LE length, bytes, newline.
        return name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
    return name.encode() + b"=" + value + b"\n"


class JournalSink:
    """Sends entries to journald; ``identifier`` becomes SYSLOG_IDENTIFIER."""

    def __init__(self, path: str = JOURNAL_SOCKET) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.connect(path)
        # Large enough for MAX_LINE plus fields; journald raises its own buffer.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)

    def send(self, message: bytes, priority: int, fields: dict[str, str]) -> None:
        parts = [_field("MESSAGE", message), _field("PRIORITY", str(priority).encode())]
        parts += [_field(k, v.encode("utf-8", "backslashreplace")) for k, v in fields.items()]
        self.sock.sendall(b"".join(parts))


class ConsoleSink:
    """Prints entries as ``[ID] line`` when miniq runs outside systemd."""

    def send(self, message: bytes, priority: int, fields: dict[str, str]) -> None:
        stream = sys.stderr.buffer if priority <= WARNING else sys.stdout.buffer
        job = fields.get("MINIQ_JOB_ID", "miniq")
        stream.write(f"[{job}] ".encode() + message + b"\n")
        stream.flush()


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
    """Turns a byte stream into lines for one job stream, without losing bytes."""

    def __init__(self, sink: Sink, priority: int, fields: dict[str, str]) -> None:
        self.sink, self.priority, self.fields = sink, priority, fields
        self.buf = b""

    def feed(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self._emit(line)
        while len(self.buf) >= MAX_LINE:
            chunk, self.buf = self.buf[:MAX_LINE], self.buf[MAX_LINE:]
            self.sink.send(text(chunk), self.priority, {**self.fields, "MINIQ_PARTIAL": "1"})

    def close(self) -> None:
        if self.buf:
            self._emit(self.buf)
            self.buf = b""

    def _emit(self, line: bytes) -> None:
        for start in range(0, max(len(line), 1), MAX_LINE):
            chunk = line[start : start + MAX_LINE]
            partial = start + MAX_LINE < len(line)
            extra = {"MINIQ_PARTIAL": "1"} if partial else {}
            self.sink.send(text(chunk), self.priority, {**self.fields, **extra})


def _entries(args: list[str]) -> Any:
    import json
    import subprocess

    proc = subprocess.Popen(["journalctl", "--no-pager", "-o", "json", *args], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            try:
                yield json.loads(line)
            except ValueError:
                continue
    finally:
        proc.terminate()
        proc.wait()


def _message(entry: dict[str, Any]) -> bytes:
    msg = entry.get("MESSAGE", "")
    return bytes(msg) if isinstance(msg, list) else str(msg).encode("utf-8", "surrogateescape")


def job_output(job_id: str, follow: bool, finished: bool, write: Any, events: bool = False, wait: float = 3.0) -> bool:
    """Write one job's journal lines with ``write``; True if its end was seen.

    Only the job's own output is written, unless ``events`` adds miniq's
    start and finish entries.  Follows a running job until its finish entry
    arrives.  For a finished job, journald may still be writing the last entries, so reading retries
    for up to ``wait`` seconds until the finish entry is there.
    """
    import time

    match = f"MINIQ_JOB_ID={job_id}"

    def emit(entry: dict[str, Any]) -> None:
        if events or "MINIQ_STREAM" in entry:
            # A long line was cut into several entries: join them again.
            write(_message(entry) + (b"" if entry.get("MINIQ_PARTIAL") == "1" else b"\n"))

    if follow and not finished:
        for entry in _entries(["-f", "-n", "all", match]):
            emit(entry)
            if entry.get("MINIQ_EVENT") == "finished":
                return True
        return False
    deadline = time.monotonic() + wait
    while True:
        entries = list(_entries([match]))
        done = any(e.get("MINIQ_EVENT") == "finished" for e in entries)
        if done or not finished or time.monotonic() > deadline:
            for entry in entries:
                emit(entry)
            return done
        time.sleep(0.1)
