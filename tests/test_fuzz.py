"""Fuzzing the two ways input reaches miniq: the command line and the helper's requests.

hypothesis (a well-kept property-based testing library) builds command lines
from miniq's own grammar, with values drawn from everything a person or a
hostile user could type: huge and tiny numbers, every unit, control
characters, bytes that are not UTF-8, and text in any script; and requests to
the system queue's helper, from raw bytes up to well-formed JSON with hostile
strings (lone surrogates, NUL characters) where a command line could hold
none.  The property: miniq answers with one of its documented exit codes and
never with "internal error", which README reserves for bugs.

Runs are derandomized (the same examples every time, so CI is deterministic)
and bounded; ``MINIQ_FUZZ_EXAMPLES`` runs more of them.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from miniq.cli.main import main
from miniq.core.caller import Caller
from miniq.serve import server
from miniq.serve.server import Connection, answer
from miniq.store.queue import Queue

#: README's exit codes, and 75 (wait gave up); 1 only with an error a person can act on.
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 75}
EXAMPLES = int(os.environ.get("MINIQ_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

# What a command line can hold: any text, but a byte that is not UTF-8 arrives as a
# surrogate of \udc80-\udcff (surrogateescape), and there is no NUL.
_command_line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
_undecodable = st.binary(min_size=1, max_size=8).map(lambda b: b.decode("utf-8", "surrogateescape"))
_numbers = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.from_regex(r"\A-?[0-9]{1,400}(\.[0-9]{0,20})?\Z"),
    st.builds(lambda n, unit: f"{n}{unit}", st.integers(0, 10**40), st.sampled_from(["", "ms", "s", " m", "min", "h", "d", "K", "G", "%"])),
    st.sampled_from(["1" * 401, "99999999999d", "100000000d", "3650d", "3651d", "1000000d", "18446744073709551616", "4E", "2T"]),
    st.sampled_from(["0", "-0", "1e9", "1_000", "٣", "²", "0x10", "inf", "nan", "1h30", "1h 30m", "  5  ", ""]),
)
_times = st.one_of(
    st.from_regex(r"\A[0-9]{1,4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{1,2}:[0-9]{2}(:[0-9]{2})?)?([+-][0-9]{2}:[0-9]{2}|Z)?\Z"),
    st.from_regex(r"\A[0-9]{1,3}:[0-9]{1,3}(:[0-9]{1,3})?\Z"),
    st.sampled_from(["0001-01-01T00:00", "9999-12-31T23:59:59", "1970-01-01T00:00+14:00", "2026-02-30T00:00", "24:00"]),
)
VALUE = st.one_of(_numbers, _times, _command_line_text, _undecodable)
ID = st.one_of(st.from_regex(r"\A[0-9]{8}-[0-9]{6}-[0-9]{6}-[0-9a-f]{8}\Z"), VALUE)

_numeric = st.one_of(_numbers, _numbers, VALUE)  # mostly numbers, sometimes anything
ENQUEUE_OPTIONS = {
    "--memory-max": _numeric, "--cpu-quota": _numeric, "--tasks-max": _numeric, "--timeout": _numeric, "--nice": _numeric,
    "--priority": _numeric, "--in": _numeric, "--at": st.one_of(_times, _times, VALUE), "--after": ID, "--retries": _numeric,
    "--unique-key": VALUE, "--on-failure": st.one_of(st.just("echo"), VALUE), "--on-success": st.one_of(st.just("echo"), VALUE),
}  # fmt: skip
_option = st.sampled_from(sorted(ENQUEUE_OPTIONS)).flatmap(lambda o: st.tuples(st.just(o), ENQUEUE_OPTIONS[o]))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    verbs = ["enqueue"] * 6 + ["list", "show", "wait", "cancel", "retry", "requeue", "purge", "stats", "every", "logs"]
    verb = draw(st.sampled_from(verbs))
    if verb == "enqueue":
        options = draw(st.lists(_option, min_size=1, max_size=2))
        name = draw(st.one_of(st.just("echo"), st.just("echo"), st.just("echo"), VALUE))
        return ["enqueue", *[w for pair in options for w in pair], name, *draw(st.lists(VALUE, max_size=3))]
    if verb == "list":
        return ["list", *draw(st.sampled_from([[], ["--all"], ["--json"]])), "--name", draw(VALUE)]
    if verb == "wait":
        return ["wait", "--timeout", draw(st.one_of(_numbers, st.just("0.01s"))), draw(ID)]
    if verb == "purge":
        return ["purge", "--older-than", draw(VALUE), "--dry-run"]
    if verb == "stats":
        return ["stats", "--window", draw(VALUE)]
    if verb == "every":  # a job type that does not exist: the gate refuses before any unit is written
        return ["every", draw(VALUE), "nope", *draw(st.lists(VALUE, max_size=2))]
    return [verb, draw(ID)]


@pytest.fixture(scope="module")
def queue_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "root"
    write_job(root, "echo", '#!/bin/sh\nprintf "%s\\n" "$@"\n')
    Queue(root).ensure_layout()
    return root


@FUZZ
@given(argv=command_lines())
def test_the_command_line_answers_every_input_with_a_documented_code(queue_root: Path, argv: list[str]) -> None:
    _check_command_line(queue_root, argv)


@pytest.mark.parametrize("option", sorted(ENQUEUE_OPTIONS))
@settings(FUZZ, max_examples=max(EXAMPLES // 3, 10))
@given(data=st.data())
def test_each_option_of_enqueue_answers_every_value_with_a_documented_code(queue_root: Path, option: str, data: st.DataObject) -> None:
    _check_command_line(queue_root, ["enqueue", option, data.draw(ENQUEUE_OPTIONS[option]), "echo"])


def _check_command_line(queue_root: Path, argv: list[str]) -> None:
    result = CliRunner().invoke(main, ["--root", str(queue_root), *argv])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in DOCUMENTED, (argv, result.exit_code, result.output)
    assert "internal error" not in result.output, (argv, result.output)


# -- the helper's request format ---------------------------------------------------

# Any code point, lone surrogates and NUL included, which JSON carries and a command line cannot.
_surrogate = st.integers(0xD800, 0xDFFF).map(chr)
_hostile_text = st.lists(st.one_of(st.characters(), _surrogate, st.sampled_from("\x00\x1b\r\n\u202e")), max_size=30).map("".join)
_verbs = st.sampled_from(["enqueue", "list", "status", "show", "logs", "wait", "cancel", "retry", "purge", "stats", "process", "every"])
_argv = st.one_of(
    command_lines(),
    st.lists(_hostile_text, min_size=1, max_size=3).map(lambda args: ["enqueue", "echo", *args]),
    st.tuples(st.sampled_from(sorted(ENQUEUE_OPTIONS)), _hostile_text).map(lambda pair: ["enqueue", *pair, "echo"]),
    st.tuples(_verbs, st.lists(st.one_of(_hostile_text, ID), max_size=3)).map(lambda v: [v[0], *v[1]]),
    st.lists(_hostile_text, max_size=4),
)
REQUESTS = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda argv, columns: json.dumps({"argv": argv, "columns": columns}).encode() + b"\n",
        _argv,
        st.one_of(st.none(), st.integers(-(2**70), 2**70), _hostile_text),
    ),  # fmt: skip
    st.builds(
        lambda obj: json.dumps(obj).encode() + b"\n",
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(), _hostile_text),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_hostile_text, inner, max_size=3),
            max_leaves=8,
        ),
    ),  # fmt: skip
)


def _ask_helper(request: bytes, caller: Caller) -> tuple[int, str]:
    """One request answered by the helper's own code over a socket pair: (exit code, what it said)."""
    client, server_side = socket.socketpair()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = server.STDOUT, server.STDERR  # as Server.run sets them: each request's thread writes to its client

    def serve() -> None:
        try:
            answer(Connection(server_side, caller), main)
        finally:
            server_side.shutdown(socket.SHUT_RDWR)  # what the helper's main loop does once a request ended

    worker = threading.Thread(target=serve)
    try:
        worker.start()
        client.sendall(request)
        client.shutdown(socket.SHUT_WR)
        client.settimeout(30)
        data = b""
        while chunk := client.recv(65536):
            data += chunk
        worker.join(30)
    finally:
        sys.stdout, sys.stderr = saved  # the helper points them at its per-thread switches
        client.close()
        server_side.close()
    said, code = [], None
    while data:
        channel, length = data[:1], struct.unpack(">I", data[1:5])[0]
        payload, data = data[5 : 5 + length], data[5 + length :]
        if channel == b"x":
            code = struct.unpack(">i", payload)[0]
        else:
            said.append(payload.decode("utf-8", "replace"))
    assert code is not None, "the helper sent no exit status"
    return code, "".join(said)


@FUZZ
@given(request=REQUESTS)
def test_the_helper_answers_every_request_with_a_documented_code(queue_root: Path, monkeypatch: pytest.MonkeyPatch, request: bytes) -> None:
    # The helper serves the system queue, MINIQ_ROOT's; a user who is not root (nobody, when the tests run as root).
    monkeypatch.setenv("MINIQ_ROOT", str(queue_root))
    uid = 65534 if os.geteuid() == 0 else os.geteuid()
    code, said = _ask_helper(request, Caller(uid, uid, (), os.getpid()))
    assert code in DOCUMENTED, (request, code, said)
    assert "internal error" not in said, (request, said)
