"""Telling systemd we are alive: sd_notify(3) without libsystemd.

The processor's service is a oneshot with ``TimeoutStartSec=2min``; for a
oneshot, systemd 252 applies no ``WatchdogSec=``, so the processor keeps
pushing the start timeout forward (``EXTEND_TIMEOUT_USEC``) while it makes
progress.  A processor that hangs stops doing so, is killed when the timeout
passes, and restarted (``Restart=on-failure``); the restarted processor
recovers the jobs it held (README, "When things go wrong").
"""

from __future__ import annotations

import _socket  # not socket.py: journal.py says why
import os
import time

#: How far each sign of life pushes the timeout; matches the unit's TimeoutStartSec.
EXTEND_USEC = 120 * 1_000_000
EVERY = 5.0  # seconds between signs of life
_last = 0.0


def notify(message: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    except OSError:
        return
    try:
        sock.sendto(message, address)
    except OSError:
        pass
    finally:
        sock.close()


def alive() -> None:
    """Push the start timeout forward, at most every ``EVERY`` seconds."""
    global _last
    now = time.monotonic()
    if now - _last >= EVERY:
        _last = now
        notify(f"EXTEND_TIMEOUT_USEC={EXTEND_USEC}".encode())
