#!/usr/bin/python3
"""The guest side of the VM test bed's command channel.

Runs as a unit in the guest (tb-agent.service).  Reads one JSON request per
line from the virtio-serial port named tb.agent:
    {"id": N, "sh": "commands", "user": null or "alice", "stdin": base64, "timeout": seconds}
runs ``bash -c`` (as that user, through runuser, with their XDG_RUNTIME_DIR),
and answers one JSON line {"id": N, "rc": code, "out": base64, "err": base64}.
"""

import base64
import json
import os
import pwd
import subprocess
import time


def port() -> str:
    for vport in sorted(os.listdir("/sys/class/virtio-ports")):
        with open(f"/sys/class/virtio-ports/{vport}/name") as f:
            if f.read().strip() == "tb.agent":
                return f"/dev/{vport}"
    raise SystemExit("no virtio port named tb.agent")


def answer(request: dict) -> dict:
    argv = ["bash", "-c", request["sh"]]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root", "USER": "root"}
    user = request.get("user")
    if user:
        entry = pwd.getpwnam(user)
        env.update(HOME=entry.pw_dir, USER=user, XDG_RUNTIME_DIR=f"/run/user/{entry.pw_uid}")
        argv = ["runuser", "-u", user, "--", *argv]
    try:
        proc = subprocess.run(
            argv,
            input=base64.b64decode(request.get("stdin", "")),
            capture_output=True,
            env=env,
            timeout=request.get("timeout", 600),
            cwd=env["HOME"] if os.path.isdir(env["HOME"]) else "/",
        )
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out, err = 124, e.stdout or b"", (e.stderr or b"") + b"\n(agent: timed out)"
    return {"id": request.get("id"), "rc": rc, "out": base64.b64encode(out).decode(), "err": base64.b64encode(err).decode()}


def main() -> None:
    # A virtio port opens once: one descriptor for both directions.
    fd = os.open(port(), os.O_RDWR)
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.1)  # no host connected yet
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                reply = answer(json.loads(line))
            except Exception as e:  # noqa: BLE001 - a broken request must not kill the channel
                reply = {"id": None, "rc": 125, "out": "", "err": base64.b64encode(repr(e).encode()).decode()}
            data = json.dumps(reply).encode() + b"\n"
            while data:
                data = data[os.write(fd, data) :]


if __name__ == "__main__":
    main()
