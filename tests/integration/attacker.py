"""What a hostile local user does to the system queue's helper, for the tests.

Standalone (standard library only): the tests run it inside the sandbox as a
user with the system's python3.  Every subcommand prints one JSON line.

  burst N ARGV...      N requests at once, each on its own connection; the exit code of each
  hold N SECONDS       N connections opened (50 a second) and held without a request; what each got
  raw                  one request of the bytes on stdin; the frames of the answer
  forge ID EVENT TEXT  a journal entry that claims to be job ID's output (and EVENT, unless "-")
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time

SOCKET = "/run/miniq/api.socket"


def answer(sock: socket.socket, timeout: float = 60.0) -> dict[str, object]:
    """Read frames until the exit frame: {"out", "err", "code"}; code None if the connection ended first."""
    sock.settimeout(timeout)
    data = b""
    out, err = b"", b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError as e:
            return {"out": out.decode(errors="replace"), "err": err.decode(errors="replace"), "code": None, "error": str(e)}
        if not chunk:
            return {"out": out.decode(errors="replace"), "err": err.decode(errors="replace"), "code": None}
        data += chunk
        while len(data) >= 5:
            channel, length = data[:1], struct.unpack(">I", data[1:5])[0]
            if len(data) < 5 + length:
                break
            payload, data = data[5 : 5 + length], data[5 + length :]
            if channel == b"x":
                return {"out": out.decode(errors="replace"), "err": err.decode(errors="replace"), "code": struct.unpack(">i", payload)[0]}
            if channel == b"o":
                out += payload
            else:
                err += payload


def request(argv: list[str]) -> dict[str, object]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(SOCKET)
        try:
            sock.sendall(json.dumps({"argv": argv}).encode() + b"\n")
        except OSError:
            pass  # refused before reading: the answer says why
        return answer(sock)
    except OSError as e:
        return {"code": None, "error": str(e)}
    finally:
        sock.close()


def burst(n: int, argv: list[str]) -> None:
    results: list[dict[str, object]] = []
    start = threading.Barrier(n)

    def one() -> None:
        start.wait()
        results.append(request(argv))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes: dict[str, int] = {}
    errors: dict[str, int] = {}
    for r in results:
        codes[str(r.get("code"))] = codes.get(str(r.get("code")), 0) + 1
        line = str(r.get("err") or r.get("error") or "").strip()
        if line:
            errors[line] = errors.get(line, 0) + 1
    print(json.dumps({"codes": codes, "errors": errors}))


def hold(n: int, seconds: float) -> None:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(SOCKET)
        socks.append((s, time.monotonic()))
        time.sleep(0.02)
    got: dict[str, int] = {}
    ends = []
    for s, opened in socks:
        r = answer(s, timeout=seconds)
        key = f"{r.get('code')} {str(r.get('err', '')).strip()}"
        got[key] = got.get(key, 0) + 1
        ends.append(time.monotonic() - opened)
        s.close()
    print(json.dumps({"answers": got, "longest": max(ends)}))


def raw() -> None:
    data = sys.stdin.buffer.read()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(SOCKET)
    try:
        sock.sendall(data)
    except OSError:
        pass
    print(json.dumps(answer(sock)))


def forge(job_id: str, event: str, text: str) -> None:
    fields = {"MESSAGE": text, "MINIQ_JOB_ID": job_id, "MINIQ_STREAM": "stdout", "SYSLOG_IDENTIFIER": "miniq", "PRIORITY": "6"}
    if event != "-":
        fields.update(MINIQ_EVENT=event, MINIQ_OUTCOME="exited")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.sendto("".join(f"{k}={v}\n" for k, v in fields.items()).encode(), "/run/systemd/journal/socket")
    print(json.dumps({"sent": fields}))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "burst":
        burst(int(sys.argv[2]), sys.argv[3:])
    elif what == "hold":
        hold(int(sys.argv[2]), float(sys.argv[3]))
    elif what == "raw":
        raw()
    elif what == "forge":
        forge(sys.argv[2], sys.argv[3], sys.argv[4])
