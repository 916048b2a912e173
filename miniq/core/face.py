"""The one face: how text reaches a person.

Much of what miniq shows came from a user: a job's arguments, its name, a
reason quoting a file, a host name, a job's output.  A control character in
it could move a terminal's cursor, erase a line, retitle the window or
overwrite another user's row of ``miniq --system list`` (``\\r``, ``ESC[2K``,
``ESC[1A``).  So everything miniq prints for a person goes through ``say`` (or
``say_lines``, or for a job's output ``say_bytes``), which makes every such character
visible as an escape, on a terminal and in a pipe alike:

* C0 controls and DEL: ``\\n``, ``\\t``, ``\\r`` by name, others ``\\x1b``;
  ``say`` prints one line, so it shows line ends and tabs too; ``say_lines``
  (a table, a record, a job's output) keeps them, and each cell that came
  from a user went through ``visible`` first;
* C1 controls (U+0080 to U+009F), bidirectional overrides and isolates
  (U+202A to U+202E, U+2066 to U+2069, U+200E, U+200F, U+061C) and line and
  paragraph separators (U+2028, U+2029): ``\\u202e``;
* bytes that were not UTF-8 (kept by Python as lone surrogates): ``\\xff``.

JSON output is exact JSON and needs none of this (``json.dumps`` escapes
every control character).  tests/test_face.py checks that no other module
writes to standard output or error.
"""

from __future__ import annotations

import contextvars
import sys
from typing import TextIO

#: The width of the person's terminal when miniq's helper answers a user over
#: its socket (server.py): the client sends it.
WIDTH: contextvars.ContextVar[int | None] = contextvars.ContextVar("miniq_width", default=None)

_NAMED = {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"}
_SPECIAL = (0x061C, 0x200E, 0x200F, 0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))


def _table(keep_lines: bool) -> dict[int, str]:
    table: dict[int, str] = {}
    for code in (*range(0x20), 0x7F):
        table[code] = _NAMED.get(code, f"\\x{code:02x}")
    for code in range(0x80, 0xA0):
        table[code] = f"\\u{code:04x}"
    for code in _SPECIAL:
        table[code] = f"\\u{code:04x}"
    for code in range(0xD800, 0xE000):
        # A byte that was not UTF-8, as os.fsdecode keeps it (surrogateescape); any other lone surrogate.
        table[code] = f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
    if keep_lines:
        del table[0x0A], table[0x09]
    return table


_ONE_LINE = _table(keep_lines=False)
_LINES = _table(keep_lines=True)


def visible(text: str) -> str:
    """``text`` as one line with every control character visible (module comment)."""
    return text.translate(_ONE_LINE)


def visible_lines(text: str) -> str:
    """``text`` with every control character visible but line ends and tabs."""
    return text.translate(_LINES)


def _stream(err: bool) -> TextIO | None:
    return sys.stderr if err else sys.stdout


def say(text: str = "", err: bool = False, end: str = "\n") -> None:
    """Print one line for a person (standard error with ``err``), every
    control character in it made visible, line ends too: a user's text
    inside it cannot start a line of its own."""
    _write(visible(text) + end, err)


def say_lines(text: str, err: bool = False, end: str = "\n") -> None:
    """Print lines for a person (a table, a record), every control character
    but line ends and tabs made visible; each cell that came from a user went
    through ``visible`` first (table.py)."""
    _write(visible_lines(text) + end, err)


def _write(text: str, err: bool) -> None:
    stream = _stream(err)
    if stream is None:  # started with that descriptor closed
        return
    stream.write(text)
    stream.flush()


def say_bytes(data: bytes) -> None:
    """Print bytes of a job's output for a person: UTF-8 where it is, ``\\xNN``
    where not, control characters but line ends and tabs made visible."""
    stream = sys.stdout
    if stream is None:
        return
    text = visible_lines(data.decode("utf-8", "surrogateescape"))
    stream.buffer.write(text.encode("utf-8"))
    stream.buffer.flush()


def say_json(text: str, end: str = "\n") -> None:
    """Print JSON made by ``json.dumps`` (which escapes control characters) exactly as it is."""
    stream = sys.stdout
    if stream is None:
        return
    stream.write(text + end)
    stream.flush()


def terminal_width() -> int:
    """Columns a table may fill: the client's terminal, else this one's, else 100."""
    import shutil

    return WIDTH.get() or shutil.get_terminal_size((100, 24)).columns
