"""Telling systemd we are alive: sd_notify(3) without libsystemd.

The processor's service has ``WatchdogSec=``: a processor that stops making
progress (a bug, a hung call) stops sending ``WATCHDOG=1``, and systemd kills
and restarts it; the restarted processor recovers its jobs (README, "When
things go wrong").
"""

from __future__ import annotations

import os
import socket
import time

_last = 0.0


def notify(message: bytes) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError:
        pass


def alive() -> None:
    """``WATCHDOG=1``, at most once a second."""
    global _last
    now = time.monotonic()
    if now - _last >= 1.0:
        _last = now
        notify(b"WATCHDOG=1")
