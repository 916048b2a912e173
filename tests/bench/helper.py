"""The system queue's helper under load, in the sandbox systemd: prints figures.

    sudo .venv/bin/python tests/bench/helper.py [SAMPLES]

Rows: `miniq --system list` of a user through the helper against root's
direct call (whole commands, medians); one request's round trip on the
socket (connect to exit status, no CLI start); the helper's memory idle and
per open connection; 1,000 requests at once from three users (how many
answered, refused with the documented error, lost) and whether the socket
still serves.  Figures, never assertions: these machines are shared.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests"))

from integration.flows import Flow  # noqa: E402
from testbed.sandbox import Sandbox  # noqa: E402

ATTACKER = str(REPO / "tests" / "integration" / "attacker.py")

TIMER = """
import json, socket, statistics, subprocess, sys, time
n, cmd = int(sys.argv[1]), sys.argv[2:]
if cmd == ["rtt"]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        s = socket.socket(socket.AF_UNIX); s.connect("/run/miniq/api.socket")
        s.sendall(b'{"argv": ["list"]}\\n')
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            data += chunk
        s.close()
        samples.append(time.perf_counter() - t)
else:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - t)
print(json.dumps(samples))
"""


def timed(sb: Sandbox, user: str | None, n: int, *cmd: str) -> list[float]:
    out = sb.run(["python3", "-c", TIMER, str(n), *cmd], user=user, timeout=600).stdout
    return [float(x) for x in json.loads(out)]


def rss(sb: Sandbox) -> int:
    pid = sb.run(["systemctl", "show", "-P", "MainPID", "miniq-api.service"]).stdout.strip()
    status = sb.run(["cat", f"/proc/{pid}/status"]).stdout
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms (min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    work = Path(tempfile.mkdtemp(prefix="miniq-bench-helper-"))
    wheels = work / "wheels"
    wheels.mkdir()
    wheels.chmod(0o755)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(REPO), "hatchling"], check=True)
    sb = Sandbox(work / "scratch", "bench-helper", binds=[REPO, wheels]).boot()
    try:
        flow = Flow(sb, None, "--system")
        flow.install(str(REPO), str(wheels))
        for user in ("alice", "bob", "carol"):
            sb.add_user(user)
        flow.add_job("echo", "#!/bin/sh\necho hi\n")
        for user in ("alice", "root"):
            sb.run([flow.miniq, "--system", "enqueue", "echo"], user=None if user == "root" else user)
        sb.sh("printf '[access]\\nmax-connections = 200\\n' > /var/lib/miniq/miniq.conf")
        rows = []
        direct = timed(sb, None, samples, flow.miniq, "--system", "list")
        through = timed(sb, "alice", samples, flow.miniq, "--system", "list")
        rows.append(("`miniq --system list`, a user through the helper", ms(through), f"root's direct call {ms(direct)}",
                     f"{statistics.median(through) / statistics.median(direct):.2f}x"))  # fmt: skip
        rtt = timed(sb, "alice", samples * 3, "rtt")
        rows.append(("one `list` request on the socket (no CLI start)", ms(rtt), "", ""))
        idle = rss(sb)
        holder = sb.popen(["python3", ATTACKER, "hold", "150", "60"], user="alice")
        time.sleep(150 * 0.02 + 1.5)
        held = rss(sb)
        holder.kill()
        sb.run(["pkill", "-u", "alice", "-f", "attacker.py"], check=False)
        per = (held - idle) / 150
        rows.append(("helper memory, idle (after answering requests)", f"{idle / 2**20:.1f} MiB", "", ""))
        rows.append(("helper memory per open connection (150 held)", f"{per / 1024:.0f} KiB",
                     "0.2: one helper process per connection, 15.6 MB each", f"{per / 15.6e6:.3f}x"))  # fmt: skip
        sb.run(["rm", "/var/lib/miniq/miniq.conf"])
        time.sleep(6)
        start = time.monotonic()
        procs = {u: sb.popen(["python3", ATTACKER, "burst", "334" if u != "carol" else "332", "list"], user=u)
                 for u in ("alice", "bob", "carol")}  # fmt: skip
        outcome = {u: json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for u, p in procs.items()}
        took = time.monotonic() - start
        answered = sum(r["codes"].get("0", 0) for r in outcome.values())
        refused = sum(r["codes"].get("6", 0) for r in outcome.values())
        lost = 1000 - answered - refused
        state = sb.run(["systemctl", "is-active", "miniq-api.socket"], check=False).stdout.strip()
        figure = f"{answered} answered, {refused} refused (exit 6), {lost} lost, in {took:.1f} s"
        rows.append(("1,000 `list` requests at once, 3 users (cap 16 each)", figure, f"socket {state} after", ""))
        print("| figure | miniq | reference | ratio |\n|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    finally:
        sb.close()


if __name__ == "__main__":
    main()
