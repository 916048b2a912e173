"""A small systemd client: what miniq asks of the manager, over D-Bus.

One ``Systemd`` is one connection (pystemd's sd-bus) to the system or a user
manager.  It starts transient units with explicitly typed properties, stops,
kills and looks up units.  Every D-Bus failure becomes a ``SystemdError`` (or
``SystemdUnavailable`` when the manager cannot be reached) with a message in
miniq's words: pystemd's own error texts never reach a user.

sd-bus connections must not be shared between processes or threads: each
processor worker opens its own.

Jobs.  systemd tells the client that queued a job when the job is done (the
``JobRemoved`` signal, sent to the job's requester without ``Subscribe``),
so a caller waits for its own jobs without polling (``wait_job``).  The
match is added once per connection that asks (``watch_jobs``).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import types
from typing import Any

from ..core.errors import MiniqError, SystemdUnavailable
from ..core.manager import Manager

Property = tuple[bytes, bytes, Any]  # (name, D-Bus signature, value)

_DEST = b"org.freedesktop.systemd1"
_PATH = b"/org/freedesktop/systemd1"
_IFACE = b"org.freedesktop.systemd1.Manager"


class SystemdError(MiniqError):
    """systemd answered, and refused."""


def explain(e: BaseException) -> str:
    """One line in miniq's words for a pystemd/D-Bus error."""
    name = getattr(e, "err_name", b"") or b""
    message = getattr(e, "err_message", b"") or b""
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    code = getattr(e, "errno", None)
    if not message and isinstance(code, int) and code:
        message = os.strerror(abs(code))
    message = message or type(e).__name__
    return f"{message} ({name})" if name and name not in message else message


def no_such_unit(e: BaseException) -> bool:
    """Whether a pystemd error means the unit is not loaded (any pystemd version)."""
    name = getattr(e, "err_name", b"") or b""
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return "NoSuchUnit" in type(e).__name__ or "NoSuchUnit" in name or "not loaded" in str(e)


def no_answer(e: BaseException) -> bool:
    """Whether a pystemd error means systemd never replied (it left the bus
    during the call: a daemon-reload, a busy manager), not that it refused."""
    name = getattr(e, "err_name", b"") or b""
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    text = explain(e)
    return "NoReply" in name or "without replying" in text or "Connection timed out" in text


def dbuslib() -> Any:
    """``pystemd.dbuslib``, without the rest of pystemd.

    pystemd's package ``__init__`` imports all of pystemd (its unit classes,
    and lxml to parse introspection data): about 12 ms of a cold processor's
    start, for nothing miniq uses.  So the package is registered with its
    ``__path__`` only, and its ``__init__`` runs when something first asks
    the package for a name it defines (``_Deferred``): a caller of the library
    that imports pystemd afterwards gets the whole package.  ``ImportError``
    if pystemd is not installed.

    The bus module itself imports two standard modules for things miniq
    never asks of it: ``pprint`` (for ``pformat`` in a ``repr``), which on
    Python 3.10+ imports ``dataclasses`` and with it ``inspect``, ``ast``,
    ``dis`` and ``tokenize``; and ``uuid`` (for pystemd's random unit names),
    which imports ``platform``.  About 10 ms of a cold processor's start
    here; so they are deferred the same way, unless something imported them
    already: they run when first used, by pystemd or by anyone else.
    """
    if "pystemd" not in sys.modules:
        if _deferred("pystemd", package=True) is None:
            raise ImportError("No module named 'pystemd'", name="pystemd")
        pprint = _deferred("pprint")
        if pprint is not None:
            # Taken by ``from pprint import pformat`` without loading the module.
            setattr(pprint, "pformat", lambda *args, **kwargs: _load(pprint).pformat(*args, **kwargs))  # noqa: B010
        _deferred("uuid")
    return importlib.import_module("pystemd.dbuslib")


def _deferred(name: str, package: bool = False) -> types.ModuleType | None:
    """Register module ``name`` in ``sys.modules`` without running its code
    (``_Deferred``); None if it was imported already or cannot be found (or,
    asked for a ``package``, is not one)."""
    if name in sys.modules:
        return None
    from importlib.util import find_spec, module_from_spec

    spec = find_spec(name)
    if spec is None or spec.loader is None or (package and spec.submodule_search_locations is None):
        return None
    module = module_from_spec(spec)  # __name__, __path__, __spec__: not its code
    module.__class__ = _Deferred
    sys.modules[name] = module
    return module


def _load(module: types.ModuleType) -> types.ModuleType:
    """Run a deferred module's code (once); the module, whole."""
    if type(module) is _Deferred:
        module.__class__ = types.ModuleType  # type: ignore[assignment]  # a plain module from now on
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(module)
    return module


class _Deferred(types.ModuleType):
    """A module (or package) whose code runs on the first lookup of a name
    it has not got; a package's submodules import without it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_load(self), name)


def _encode(props: list[Property]) -> list[Any]:
    apply_signature = dbuslib().apply_signature
    args: list[Any] = [(ord(b"a"), b"(sv)")]
    for name, signature, value in props:
        args += [(ord(b"r"), b"sv"), (ord(b"s"), name), (ord(b"v"), signature)]
        args += apply_signature(signature, [value])
        args += [(-1, None), (-1, None)]
    return [*args, (-1, None)]


class Systemd:
    """A connection to ``manager``; ``SystemdUnavailable`` if there is none."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        #: Object paths of this connection's jobs that systemd said are done,
        #: collected while ``signals`` is True (``watch_jobs``).
        self.removed: set[bytes] = set()
        self.signals = False
        self._watch_asked = False
        try:
            DBus = dbuslib().DBus
        except ImportError as e:
            raise SystemdUnavailable(
                f"pystemd is not installed: {e}", hint="pip install pystemd, or apt-get install python3-pystemd"
            ) from None
        try:
            self.bus = DBus(user_mode=manager is Manager.USER)
            self.bus.open()
            self.call(b"GetUnit", b"s", [b"init.scope"] if manager is Manager.SYSTEM else [b"default.target"], quiet=True)
        except SystemdUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - pystemd raises its own DBusError types
            if no_such_unit(e):
                return  # it answered
            where = (
                "your user manager (is XDG_RUNTIME_DIR set, and are you logged in?)" if manager is Manager.USER else "the system manager"
            )
            raise SystemdUnavailable(f"cannot reach {where} over D-Bus: {explain(e)}") from None

    def call(self, method: bytes, signature: bytes, values: list[Any], quiet: bool = False) -> Any:
        return self.call_raw(method, dbuslib().apply_signature(signature, values) if signature else [], quiet)

    def call_raw(self, method: bytes, args: list[Any], quiet: bool = False) -> Any:
        try:
            return self.bus.call_method(_DEST, _PATH, _IFACE, method, args).body
        except Exception as e:  # noqa: BLE001 - pystemd's D-Bus errors
            if quiet:
                raise
            if no_such_unit(e):
                raise NoSuchUnit(explain(e)) from None
            if no_answer(e):
                raise NoAnswer(f"systemd did not answer {method.decode()}: {explain(e)}") from None
            raise SystemdError(f"systemd refused {method.decode()}: {explain(e)}") from None

    def start_transient(self, unit: str, props: list[Property], mode: bytes = b"fail", aux: list[tuple[str, list[Property]]] = ()) -> bytes:  # type: ignore[assignment]
        """``StartTransientUnit`` with explicitly typed properties.

        pystemd's own wrapper looks signatures up in a table that lacks some
        properties (``PIDs`` in 0.15, more in Debian's 0.11), so the message
        is built here from (name, D-Bus signature, value) triples.
        """
        apply_signature = dbuslib().apply_signature
        args = apply_signature(b"ss", [unit.encode(), mode]) + _encode(props)
        args += [(ord(b"a"), b"(sa(sv))")]
        for aux_name, aux_props in aux:
            args += [(ord(b"r"), b"sa(sv)"), (ord(b"s"), aux_name.encode()), *_encode(aux_props), (-1, None)]
        args += [(-1, None)]
        body = self.call_raw(b"StartTransientUnit", args)
        return bytes(body[0] if isinstance(body, list) else body)

    def watch_jobs(self) -> None:
        """Collect the ``JobRemoved`` signals of this connection's jobs (once);
        without them (an old pystemd or libsystemd) callers poll instead."""
        if self._watch_asked:
            return
        self._watch_asked = True
        removed = self.removed

        def on_removed(msg: Any, error: Any = None, userdata: Any = None) -> None:
            try:
                msg.process_reply(False)
                removed.add(bytes(msg.body[1]))
            except Exception:  # noqa: BLE001,S110 - a signal it cannot read is not ours
                pass

        # pystemd keeps a bare pointer to the callback: it must outlive the match.
        self._on_removed = on_removed
        try:
            self.bus.match_signal(_DEST, _PATH, _IFACE, b"JobRemoved", on_removed)
        except Exception:  # noqa: BLE001 - an old pystemd or libsystemd: callers poll instead
            return
        self.signals = True

    def wait_job(self, job: bytes, timeout: float) -> bool:
        """Wait until systemd says ``job`` (queued through this connection) is
        done; False after ``timeout`` seconds or if signals are unavailable."""
        removed = self.removed
        if not self.signals:
            return False
        if len(removed) > 1000:
            removed.clear()  # jobs nobody waited for (a StopUnit's)
        deadline = time.monotonic() + timeout
        try:
            while job not in removed:
                self.bus.process()  # one message, or none
                left = deadline - time.monotonic()
                if job in removed or left <= 0:
                    break
                self.bus.wait(int(left * 1_000_000))  # returns at once while messages are queued
        except Exception:  # noqa: BLE001 - pystemd's D-Bus errors: callers poll instead
            return False
        found = job in removed
        removed.discard(job)
        return found

    def stop_unit(self, unit: str) -> bytes | None:
        """Stop a unit; the stop job's object path, or None if it was not loaded."""
        try:
            body = self.call(b"StopUnit", b"ss", [unit.encode(), b"replace"])
        except NoSuchUnit:
            return None
        return bytes(body[0] if isinstance(body, list) else body)

    def kill_unit(self, unit: str, signal: int) -> bool:
        try:
            self.call(b"KillUnit", b"ssi", [unit.encode(), b"all", signal])
        except NoSuchUnit:
            return False
        return True

    def loaded(self, unit: str) -> bool:
        try:
            self.call(b"GetUnit", b"s", [unit.encode()])
        except NoSuchUnit:
            return False
        return True

    def wait_unloaded(self, unit: str, timeout: float, stop_job: bytes | None = None) -> bool:
        """Wait until ``unit`` is unloaded; False after ``timeout`` seconds.

        With the ``stop_job`` that stops it (queued through this connection),
        the wait is for that job's end (a signal, ``wait_job``); systemd then
        collects the inactive unit, which is looked up again after 1, 2, 4 ...
        ms (no more than 50), as is the whole wait without signals.
        """
        deadline = time.monotonic() + timeout
        if stop_job is not None:
            self.wait_job(stop_job, timeout)
        delay = 0.001
        while self.loaded(unit):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return True

    def units(self, pattern: str) -> list[str]:
        """Names of loaded units matching a glob."""
        apply_signature = dbuslib().apply_signature
        args = apply_signature(b"as", [[]]) + apply_signature(b"as", [[pattern.encode()]])
        body = self.call_raw(b"ListUnitsByPatterns", args)
        rows = body[0] if body and isinstance(body[0], list) else body
        return [row[0].decode() if isinstance(row[0], bytes) else str(row[0]) for row in rows]

    def close(self) -> None:
        try:
            self.bus.close()
        except Exception:  # noqa: BLE001 - closing must never fail a job
            pass


class NoSuchUnit(SystemdError):
    """The unit is not loaded."""


class NoAnswer(SystemdError):
    """systemd did not reply: it neither did nor refused what was asked."""
