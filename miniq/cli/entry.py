"""The ``miniq`` command's entry point.

``miniq process`` is what ``miniq-process.service`` runs each time the path
unit fires, and a cold processor's start is time a queued job waits.  So that
exact command line starts without the CLI: neither click nor the other
commands' modules are imported.  It does what ``miniq process`` does through
cli.py (the same manager and root, the same one-line errors and exit codes,
the same summary line); every other command line goes through cli.py,
including ``process`` with options and a user's ``process`` on the system
queue (which goes to the helper).

A command imports 50 to 90 modules before it does its work.  Python's cyclic
garbage collector would run about 25 times meanwhile (4 to 7 ms here) and
free nothing: modules, classes and functions live as long as the process.
So the collector is off while a command starts, and on again (``started``)
once its modules are imported; ``gc.freeze`` keeps what startup created out of
every later collection.  A processor and a ``miniq wait`` run for hours, with
the collector on.
"""

from __future__ import annotations

import gc
import os
import sys


def run() -> None:
    gc.disable()
    if sys.argv[1:] == ["process"]:
        code = process()
        if code is not None:
            sys.exit(code)
    from .main import run as cli_run

    started()
    cli_run()


def started() -> None:
    """The command's modules are imported: collect garbage again (module comment)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def process() -> int | None:
    """Run ``miniq process``; None if the command must go through the CLI."""
    from ..core.manager import SYSTEM_ROOT, Manager, detect_manager, resolve_root

    try:
        manager = detect_manager()
        root = resolve_root(manager)
        if manager is Manager.SYSTEM and os.geteuid() != 0 and root == SYSTEM_ROOT:
            return None  # through the helper, as cli.py does it
        from ..run.processor import Processor, preload
        from ..store.queue import Queue

        preload()
        started()
        from ..core.face import say

        say(Processor(Queue(root), manager).run().describe())
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the command's edge: one line, a documented code
        from .main import report

        return report(e)
    return 0
