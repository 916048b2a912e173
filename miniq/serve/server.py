"""The system queue's helper: one root process that answers every user (``miniq serve``).

systemd listens on ``/run/miniq/api.socket`` (``miniq-api.socket``,
``Accept=no``) and starts ``miniq-api.service`` at the first connection.  The
helper accepts connections itself, answers each in a thread of its own with
the same command a root user runs (the click group of cli.py, which ``miniq
serve`` hands in: this module imports nothing of the CLI), and exits once it
has been idle for ``IDLE_EXIT`` seconds; systemd starts it again at the next
connection.  The client side is helper.py.

Who asks is what the kernel says (``SO_PEERCRED``, caller.py), never what a
request says.  What one user can do to the others, and the answer to each:

* Open many connections, or hold them: each user has at most
  ``max-connections`` (``[access]``/``[user:NAME]`` in miniq.conf, default
  ``DEFAULT_MAX_CONNECTIONS``) open at once, and the helper at most
  ``MAX_TOTAL``; a connection over either is answered at once with one
  ``Error:`` line and exit code 6 (``Busy``), and closed.  Others' are served.
* Connect and send nothing, or too much: a request must arrive whole within
  ``REQUEST_TIMEOUT`` seconds and be at most ``MAX_REQUEST`` bytes; else one
  ``Error:`` line, exit code 2.  A client that does not read its answer for
  ``SEND_TIMEOUT`` seconds is dropped.
* Hang up during ``wait`` or ``logs -f``: the helper notices (the connection
  becomes readable at its end), and the request ends (hangup.py), so an
  abandoned request holds nothing.
* Send a malformed or hostile request: every error, expected or not, becomes
  one ``Error:`` line and an exit code for that client alone; the helper never
  dies from a request.

Memory per connection is a thread, its socket and a few buffers (README
gives the measured figure); the helper needs no process per connection.
"""

from __future__ import annotations

import io
import json
import os
import queue as queues
import selectors
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import hangup
from ..core.caller import Caller, peer
from ..core.errors import BadInput, Busy, MiniqError, NotPermitted
from ..core.face import WIDTH, visible, visible_lines
from .helper import COMMANDS, MAX_REQUEST, REQUEST_TIMEOUT, exit_frame, frame

IDLE_EXIT = 30.0  # seconds without a connection before the helper exits
SEND_TIMEOUT = 30.0  # seconds a client may leave its answer unread
MAX_TOTAL = 1024  # connections served at once, over all users
DEFAULT_MAX_CONNECTIONS = 16  # per user, unless miniq.conf says otherwise
ACCEPT_BATCH = 64  # connections accepted before looking at other events
SD_LISTEN_FDS_START = 3

if TYPE_CHECKING:
    import click


# -- per-thread standard streams -------------------------------------------------


class _Switch(io.TextIOBase):
    """sys.stdout (or stderr) of the helper: each request's thread writes to its
    own client; other threads to the original stream."""

    def __init__(self, default: Any) -> None:
        self.default = default
        self.local = threading.local()

    def _target(self) -> Any:
        return getattr(self.local, "stream", None) or self.default

    def set(self, stream: io.TextIOWrapper | None) -> None:
        self.local.stream = stream

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    @property
    def buffer(self) -> Any:
        return self._target().buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: Any) -> int:
        return int(self._target().write(text))

    def flush(self) -> None:
        self._target().flush()

    def fileno(self) -> int:
        return int(self._target().fileno())


class _Framed(io.RawIOBase):
    """A write-only stream that sends what is written as frames of one channel."""

    def __init__(self, sock: socket.socket, channel: bytes) -> None:
        self.sock, self.channel = sock, channel

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if data:
            self.sock.sendall(frame(self.channel, data))
        return len(data)


STDOUT, STDERR = _Switch(sys.stdout), _Switch(sys.stderr)


def _stream(sock: socket.socket, channel: bytes) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(_Framed(sock, channel)), encoding="utf-8", errors="backslashreplace", line_buffering=True)


# -- one connection ---------------------------------------------------------------


@dataclass(eq=False)
class Connection:
    sock: socket.socket
    caller: Caller
    hangup: hangup.Hangup = field(default_factory=hangup.Hangup)
    watched: bool = False


#: ``_read_request``'s argv for a ``{"hello": 1}`` request (helper.ping).
HELLO: list[str] = []


def _read_request(sock: socket.socket) -> tuple[list[str], int | None]:
    """The request on ``sock``: (argv, terminal columns), ``HELLO`` for a ping;
    ``BadInput`` if it is not one."""
    deadline = time.monotonic() + REQUEST_TIMEOUT
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BadInput(f"no whole request arrived within {REQUEST_TIMEOUT:g} s of connecting")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise BadInput(f"no whole request arrived within {REQUEST_TIMEOUT:g} s of connecting") from None
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise BadInput(f"request larger than {MAX_REQUEST} bytes, the most the helper reads")
    try:
        request = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise BadInput(f"malformed request: {str(e)[:200]}") from None
    if isinstance(request, dict) and request.get("hello") == 1 and "argv" not in request:
        return HELLO, None
    argv = request.get("argv") if isinstance(request, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise BadInput("malformed request: expected a JSON object with an argv list of strings")
    for word in argv:
        try:
            word.encode("utf-8", "surrogateescape")  # what a command line can hold: any bytes but NUL
        except UnicodeEncodeError:
            raise BadInput("malformed request: an argument holds a lone UTF-16 surrogate, which no command line can") from None
        if "\0" in word:
            raise BadInput("malformed request: an argument holds a NUL character, which no command line can") from None
    columns = request.get("columns")
    return argv, columns if isinstance(columns, int) and not isinstance(columns, bool) else None


def answer(conn: Connection, command: click.Group) -> None:
    """Answer the request on ``conn`` with ``command`` (in its own thread); never raises."""
    sock = conn.sock
    out, err = _stream(sock, b"o"), _stream(sock, b"e")
    code = 1
    try:
        hangup.set_current(conn.hangup)
        argv, columns = _read_request(sock)
        sock.settimeout(SEND_TIMEOUT)
        if argv is HELLO:
            from ..core.version import __version__

            _say(out, f"miniq {__version__}\n")
            code = 0
            return
        if argv[0] not in COMMANDS:
            raise NotPermitted(f"'miniq --system {visible(argv[0])}' is for root only")
        sock.sendall(frame(b"a", b""))  # read and being answered: the client waits as long as it takes
        Server.watch(conn)
        code = _run(command, argv, conn.caller, out, err, columns)
    except hangup.ClientGone:
        return
    except MiniqError as e:
        code = e.exit_code
        _say(err, f"Error: {visible(e.message)}\n" + (f"Hint: {visible(e.hint)}\n" if e.hint else ""))
    except (OSError, ValueError) as e:  # the client went away, or sent something odd
        code = 2 if isinstance(e, ValueError) else 1
        _say(err, f"Error: {visible(str(e))}\n")
    except Exception as e:  # noqa: BLE001 - one request's bug never stops the helper
        _log(f"internal error answering uid {conn.caller.uid}: {e!r}\n{traceback.format_exc()}")
        _say(err, f"Error: internal error in miniq's helper: {visible(repr(e))}\n")
    finally:
        for stream in (out, err):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            sock.sendall(exit_frame(code))
        except OSError:
            pass


def _say(stream: io.TextIOWrapper, text: str) -> None:
    """Lines for the client's person, through the one face (face.py)."""
    try:
        stream.write(visible_lines(text))
        stream.flush()
    except (OSError, ValueError):
        pass


def _run(command: click.Group, argv: list[str], caller: Caller, out: io.TextIOWrapper, err: io.TextIOWrapper, columns: int | None) -> int:
    """Run ``miniq --system ARGV`` for ``caller`` with its output on this connection."""
    from click.exceptions import ClickException, Exit

    if columns is not None:
        WIDTH.set(max(20, min(columns, 1000)))
    for switch, stream in ((STDOUT, out), (STDERR, err)):
        switch.set(stream)
    try:
        code = command.main(args=["--system", *argv], prog_name="miniq", standalone_mode=False, obj=caller)
        return code if isinstance(code, int) else 0  # click returns the status of ctx.exit() here
    except SystemExit as e:
        return int(e.code or 0)
    except Exit as e:
        return int(e.exit_code)
    except ClickException as e:
        e.show(file=err)
        return e.exit_code
    finally:
        STDOUT.set(None)
        STDERR.set(None)
        # click wraps sys.stdout and sys.stderr for good when a write fails
        # with EPIPE (a client gone): put the switches back.
        sys.stdout, sys.stderr = STDOUT, STDERR


def _log(message: str) -> None:
    """A line for the helper's journal (its standard error)."""
    try:
        stream = sys.__stderr__
        if stream is None:
            return
        stream.write(visible_lines(message) + "\n")
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


# -- the helper -------------------------------------------------------------------


class Server:
    """Accepts connections and answers each in a thread (see the module comment)."""

    current: Server | None = None

    def __init__(self, listener: socket.socket, root: Path, command: click.Group) -> None:
        self.listener, self.root, self.command = listener, root, command
        self.listener.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.messages: queues.SimpleQueue[tuple[str, Connection]] = queues.SimpleQueue()
        self.per_uid: dict[int, int] = {}
        self.active = 0
        self.refused: dict[int, tuple[float, int]] = {}  # uid -> (last logged, refused since)
        self._caps: tuple[tuple[float, int] | None, Any] = (None, None)
        self.served = 0

    # Threads tell the main loop about their connections through a queue and a pipe.

    @staticmethod
    def watch(conn: Connection) -> None:
        """Watch ``conn`` for its client hanging up (from the request's thread)."""
        if Server.current is not None:
            Server.current._post("watch", conn)

    def _post(self, what: str, conn: Connection) -> None:
        self.messages.put((what, conn))
        try:
            os.write(self.wake_w, b".")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already

    def run(self) -> int:
        Server.current = self
        sys.stdout, sys.stderr = STDOUT, STDERR
        idle_since = time.monotonic()
        while True:
            timeout = None if self.active else max(0.0, idle_since + IDLE_EXIT - time.monotonic())
            events = self.sel.select(timeout)
            for key, _ in events:
                try:
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        self._messages()
                    else:
                        self._hung_up(key.data)
                except Exception as e:  # noqa: BLE001 - the helper serves everyone: it must not die of one event
                    _log(f"internal error: {e!r}\n{traceback.format_exc()}")
            if self.active:
                idle_since = time.monotonic()
            elif not events and time.monotonic() - idle_since >= IDLE_EXIT and not self._accept():
                return 0  # idle, and nobody is waiting: systemd starts us again when someone connects

    def _accept(self) -> bool:
        """Accept what is waiting (a batch at most); True if anything was."""
        accepted = False
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # out of descriptors, say: try again at the next event
                _log(f"accept failed: {e}")
                time.sleep(0.05)
                break
            accepted = True
            self._admit(sock)
        return accepted

    def _admit(self, sock: socket.socket) -> None:
        try:
            caller = peer(sock)
        except OSError:
            sock.close()
            return
        held = self.per_uid.get(caller.uid, 0)
        cap = self._cap(caller)
        if self.active >= MAX_TOTAL:
            self._refuse(sock, caller, f"the system queue's helper is answering {self.active} requests, the most it takes at once; "
                         "try again in a moment")  # fmt: skip
            return
        if held >= cap:
            self._refuse(sock, caller, f"you have {held} requests open with the system queue, the most one user may (max-connections = "
                         f"{cap}); wait for some to end, e.g. a miniq wait or logs -f")  # fmt: skip
            return
        conn = Connection(sock, caller)
        self.per_uid[caller.uid] = held + 1
        self.active += 1
        try:
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()
        except RuntimeError:  # no more threads: refuse, as if full
            self._closed(conn)
            self._refuse(sock, caller, "the system queue's helper cannot take more requests now; try again in a moment")

    def _answer(self, conn: Connection) -> None:
        try:
            answer(conn, self.command)
        finally:
            self._post("done", conn)

    def _refuse(self, sock: socket.socket, caller: Caller, message: str) -> None:
        error = Busy(message)
        try:
            sock.setblocking(False)
            sock.send(frame(b"e", f"Error: {error.message}\n".encode()) + exit_frame(error.exit_code))
            while sock.recv(65536):  # what the client sent: closing with it unread would reset the connection
                pass
        except OSError:
            pass
        sock.close()
        last, count = self.refused.get(caller.uid, (0.0, 0))
        now = time.monotonic()
        if now - last >= 10:
            _log(f"refused {count + 1} connection(s) of uid {caller.uid} in the last {min(now - last, 10):.0f} s: {message}")
            self.refused[caller.uid] = (now, 0)
        else:
            self.refused[caller.uid] = (last, count + 1)

    def _cap(self, caller: Caller) -> int:
        """The caller's connection cap, from miniq.conf (read again when it changes)."""
        from ..store.config import Config
        from ..store.layout import config_path

        conf = config_path(self.root)
        try:
            st = os.stat(conf)
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except OSError:
            stamp = None
        if stamp != self._caps[0] or self._caps[1] is None:
            try:
                config = Config.load(self.root)
            except MiniqError as e:
                _log(f"using default connection caps: {e.message}")
                config = Config()
            self._caps = (stamp, config)
        cap = self._caps[1].connections_for(caller.user)
        return DEFAULT_MAX_CONNECTIONS if cap is None else int(cap)

    def _messages(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                what, conn = self.messages.get_nowait()
            except queues.Empty:
                return
            if what == "watch":
                if conn.sock.fileno() >= 0 and not conn.hangup.gone():
                    self.sel.register(conn.sock, selectors.EVENT_READ, conn)
                    conn.watched = True
            else:
                self._closed(conn)
                conn.sock.close()
                self.served += 1

    def _closed(self, conn: Connection) -> None:
        if conn.watched:
            self.sel.unregister(conn.sock)
            conn.watched = False
        uid = conn.caller.uid
        self.per_uid[uid] -= 1
        if not self.per_uid[uid]:
            del self.per_uid[uid]
        self.active -= 1

    def _hung_up(self, conn: Connection) -> None:
        """A connection being answered became readable: its client hung up
        (or sent more than one request, which ends it too)."""
        if not conn.watched:  # its answer ended earlier in this round of events
            return
        self.sel.unregister(conn.sock)
        conn.watched = False
        conn.hangup.fire()
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # a thread blocked writing to it returns
        except OSError:
            pass


def listen_fd() -> int | None:
    """The socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0") or 0) >= 1:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        return SD_LISTEN_FDS_START
    return None


def serve(root: Path, command: click.Group) -> int:
    """``miniq serve``: answer connections on the socket systemd passed, each
    with ``command`` (miniq's click group).

    Without one, standard input is taken as one connection (units of 0.2,
    ``Accept=yes``, until they are replaced)."""
    fd = listen_fd()
    if fd is not None:
        listener = socket.socket(fileno=fd)
        return Server(listener, root, command).run()
    sock = socket.socket(fileno=os.dup(0))
    try:
        answer(Connection(sock, peer(sock)), command)
    finally:
        sock.close()
    return 0
