"""The ``miniq`` command's entry point.

``miniq process`` is what ``miniq-process.service`` runs each time the path
unit fires, and a cold processor's start is time a queued job waits.  So that
exact command line starts without the CLI: neither click nor the other
commands' modules are imported.  It does what ``miniq process`` does through
cli.py (the same manager and root, the same one-line errors and exit codes,
the same summary line); every other command line goes through cli.py,
including ``process`` with options and a user's ``process`` on the system
queue (which goes to the helper).
"""

from __future__ import annotations

import os
import sys


def run() -> None:
    if sys.argv[1:] == ["process"]:
        code = process()
        if code is not None:
            sys.exit(code)
    from .cli import run as cli_run

    cli_run()


def process() -> int | None:
    """Run ``miniq process``; None if the command must go through the CLI."""
    from .manager import SYSTEM_ROOT, Manager, detect_manager, resolve_root

    try:
        manager = detect_manager()
        root = resolve_root(manager)
        if manager is Manager.SYSTEM and os.geteuid() != 0 and root == SYSTEM_ROOT:
            return None  # through the helper, as cli.py does it
        from .processor import Processor
        from .queue import Queue

        print(Processor(Queue(root), manager).run().describe(), flush=True)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # noqa: BLE001 - the command's edge: one line, a documented code
        from .cli import report

        return report(e)
    return 0
