"""Waking the processor for delayed jobs with a transient systemd timer.

Jobs waiting for their time or a retry's backoff sit in ``delayed/``, which
no path unit watches.  Before it exits, the processor arms one transient
timer, ``miniq-wake-<ms>.timer``, in its own manager, for when the earliest
delayed job is due.  A transient timer cannot name another unit to start
(systemd 252 refuses ``Unit=`` on it), so it triggers its transient twin
``miniq-wake-<ms>.service``, which runs ``systemctl start miniq-process.service``:
the jobs still run in, and log as, the processor's own service.  Older wake
timers are stopped first, so at most one is armed.  Transient timers do not
survive a reboot: ``miniq-process.timer`` then runs the processor once after
boot, which promotes every job whose time has passed and arms the next.  A
processor that cannot arm one stays until the job is due (processor.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core.manager import Manager
from .dbus import Systemd

PREFIX = "miniq-wake-"
SERVICE = "miniq-process.service"


def arm(systemd: Systemd, when: float) -> str:
    """Arm the wake timer for Unix time ``when``; returns the timer's name."""
    for unit in systemd.units(f"{PREFIX}*.timer"):
        systemd.stop_unit(unit)
    delay_usec = max(int((when - time.time()) * 1_000_000), 1000)
    base = f"{PREFIX}{int(when * 1000)}"
    import shutil  # with bz2 and lzma: only when a timer is armed, not at every processor's start

    systemctl = shutil.which("systemctl") or "/usr/bin/systemctl"
    argv = systemd.manager.systemctl("start", "--no-block", SERVICE)
    argv[0] = systemctl
    systemd.start_transient(
        f"{base}.timer",
        [
            (b"Description", b"s", b"miniq: wake the processor for delayed jobs"),
            (b"TimersMonotonic", b"a(st)", [(b"OnActiveSec", delay_usec)]),
            (b"AccuracyUSec", b"t", 1000),
            (b"RemainAfterElapse", b"b", False),
        ],
        mode=b"replace",
        aux=[
            (
                f"{base}.service",
                [
                    (b"Description", b"s", b"miniq: start the processor for delayed jobs"),
                    (b"Type", b"s", b"oneshot"),
                    (b"CollectMode", b"s", b"inactive-or-failed"),
                    (b"ExecStart", b"a(sasb)", [(systemctl.encode(), [a.encode() for a in argv], False)]),
                ],
            )
        ],
    )
    return f"{base}.timer"


def arm_for(manager: Manager, when: float, log: Callable[..., None], waker: Callable[[float], object] | None = None) -> bool:
    """Arm the wake timer of ``manager`` for ``when`` (or call ``waker``,
    a test's), saying so with ``log``; False if it could not be armed."""
    from . import journal

    try:
        if waker is not None:
            waker(when)
        else:
            systemd = Systemd(manager)
            try:
                arm(systemd, when)
            finally:
                systemd.close()
        log(f"next delayed job due in {max(when - time.time(), 0):.1f} s; wake timer armed")
        return True
    except Exception as e:  # noqa: BLE001 - the processor stays until the job is due instead (processor.py)
        log(f"could not arm the wake timer ({e}); this processor stays until the next delayed job is due", journal.WARNING)
        return False
