"""What a command runs against: the manager and the queue root its global
options chose, and, inside the system queue's helper, who is asking."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..core.manager import Manager, detect_manager, resolve_root

if TYPE_CHECKING:
    from ..core.caller import Caller
    from ..store.queue import Queue


class Context:
    """What the global options chose: the manager and the queue root, and,
    inside the system queue's helper, who is asking (caller.py)."""

    def __init__(self, manager: Manager | None, root: str | None, caller: Caller | None = None) -> None:
        self.manager = manager or detect_manager()
        self.root = resolve_root(self.manager, root)
        self.explicit_root = root is not None
        self.caller = caller

    @property
    def queue(self) -> Queue:
        from ..store.queue import Queue

        return Queue(self.root, self.caller)

    @property
    def through_helper(self) -> bool:
        """A user's command on the system queue goes through its root helper."""
        from ..core.manager import SYSTEM_ROOT

        return self.caller is None and self.manager is Manager.SYSTEM and os.geteuid() != 0 and self.root == SYSTEM_ROOT
