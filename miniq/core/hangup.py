"""Telling a long request that its client went away.

In the system queue's helper (server.py) one process answers many users, each
request in a thread of its own.  A request that can last (``wait``,
``logs -f``, ``cancel`` waiting for its job) must end when its client hangs
up, or an abandoned ``wait`` would hold one of that user's connections until
its job ended.  The helper sets a ``Hangup`` for each request's thread; long
calls look at ``gone()`` while they wait and register hooks that interrupt
what blocks (a ``journalctl -f`` to terminate).  Outside the helper there is
no ``Hangup`` and nothing changes.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class ClientGone(Exception):
    """The client of this request hung up; nobody is left to answer."""


class Hangup:
    """Whether one request's client hung up, and what to do when it does."""

    def __init__(self) -> None:
        self._gone = threading.Event()
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def gone(self) -> bool:
        return self._gone.is_set()

    def fire(self) -> None:
        """The client hung up: run every hook once (from the helper's main thread)."""
        with self._lock:
            if self._gone.is_set():
                return
            self._gone.set()
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - a hook must not stop the others
                pass

    @contextmanager
    def hook(self, action: Callable[[], None]) -> Iterator[None]:
        """Run ``action`` if the client hangs up while inside this block."""
        with self._lock:
            fire_now = self._gone.is_set()
            if not fire_now:
                self._hooks.append(action)
        if fire_now:
            action()
        try:
            yield
        finally:
            with self._lock:
                if action in self._hooks:
                    self._hooks.remove(action)


_current: contextvars.ContextVar[Hangup | None] = contextvars.ContextVar("miniq_hangup", default=None)


def current() -> Hangup | None:
    """The hangup of the request this thread answers, if any."""
    return _current.get()


def set_current(hangup: Hangup) -> None:
    _current.set(hangup)


def check() -> None:
    """``ClientGone`` if this request's client hung up."""
    hangup = _current.get()
    if hangup is not None and hangup.gone():
        raise ClientGone


@contextmanager
def on_hangup(action: Callable[[], None]) -> Iterator[None]:
    """Run ``action`` if this request's client hangs up inside the block."""
    hangup = _current.get()
    if hangup is None:
        yield
        return
    with hangup.hook(action):
        yield
