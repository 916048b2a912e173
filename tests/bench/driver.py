"""The measurements of tests/bench/compare.py, run inside the sandbox systemd.

    PY driver.py ROOT WHAT [ARGS...]   -> prints one JSON object

Each WHAT measures one row (medians are taken by the caller over repeats, or
here over samples).  Every command is started from here, inside the sandbox,
so no nsenter or container overhead is in any figure.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

PY = sys.executable
MINIQ = str(Path(PY).parent / "miniq")


def wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def peak_kib(cmd: list[str]) -> int:
    """Peak RSS (KiB) of a command, from its own rusage."""
    proc = subprocess.run(
        [PY, "-c", "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True);"
         " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)", *cmd],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(proc.stdout.strip())


def enqueue(root: str, samples: int) -> dict[str, list[float]]:
    """`miniq enqueue` and the peers' submit commands against `import click, json`."""
    out: dict[str, list[float]] = {"miniq": [], "import": [], "nq": [], "tsp": [], "systemd-run": []}
    env = dict(os.environ, NQDIR=f"{root}/../nq", TS_SOCKET=f"{root}/../tsp.socket", TS_SAVELIST="", TS_MAXFINISHED="10")
    os.makedirs(env["NQDIR"], exist_ok=True)
    for _ in range(samples):
        out["miniq"].append(wall([MINIQ, "--root", root, "enqueue", "true"]))
        out["import"].append(wall([PY, "-c", "import click, json"]))
        out["nq"].append(wall(["nq", "true"], env))
        out["tsp"].append(wall(["tsp", "true"], env))
        out["systemd-run"].append(wall(["systemd-run", "--no-block", "--quiet", "--collect", "true"]))
    subprocess.run(["tsp", "-K"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return out


DRAIN = """
import sys, time
from pathlib import Path
from miniq.run.processor import Processor
from miniq.store.queue import Queue
from miniq.core.manager import Manager
class Null:
    def send(self, *a, **k): pass
root, n, parallel, limit = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
q = Queue(root)
for i in range(n):
    q.enqueue("true", [])
t, wall = time.perf_counter(), time.time()
s = Processor(q, Manager.SYSTEM, sink=Null(), parallel=parallel, linger=0, max_jobs=limit or None).run()
dt = time.perf_counter() - t
print(f"{dt:.4f} {len(s.succeeded)} {wall:.6f}")
"""

# Whether /proc shows ``pid`` in the scope ``unit`` (every loop below).
PLACED = """
def placed(pid, unit):
    with open(f"/proc/{pid}/cgroup") as f:
        return f.read().rstrip().endswith("/" + unit)
"""

# What both references do per job, after ``bus = DBus(); bus.open()``:
# StartTransientUnit of a scope holding ``pid``, and whether /proc shows the
# PID in it.
SCOPE = (
    """
def start(unit, pid):
    args = apply_signature(b"ss", [unit.encode(), b"fail"])
    args += [(ord(b"a"), b"(sv)"), (ord(b"r"), b"sv"), (ord(b"s"), b"PIDs"), (ord(b"v"), b"au")]
    args += apply_signature(b"au", [[pid]]) + [(-1, None), (-1, None), (-1, None), (ord(b"a"), b"(sa(sv))"), (-1, None)]
    bus.call_method(b"org.freedesktop.systemd1", b"/org/freedesktop/systemd1", b"org.freedesktop.systemd1.Manager",
                    b"StartTransientUnit", args)
"""
    + PLACED
)

# The minimal loop of the speed issue: fork a gated child, StartTransientUnit
# with its PID, wait until /proc shows it in the scope (polled every 0.5 ms),
# release it to exec true, reap.  ``tag`` keeps two loops' scope names apart.
REFERENCE = (
    """
import os, sys, time
from pystemd.dbuslib import DBus, apply_signature
n, tag = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "a"
bus = DBus(); bus.open()
"""
    + SCOPE
    + """
t = time.perf_counter()
for i in range(n):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w); os.read(r, 1); os.execv("/bin/true", ["true"])
    os.close(r)
    unit = f"ref-{tag}-{os.getpid()}-{i}.scope"
    start(unit, pid)
    while not placed(pid, unit):
        time.sleep(0.0005)
    os.write(w, b"g"); os.close(w)
    os.waitpid(pid, 0)
print(f"{time.perf_counter() - t:.4f} {n}")
"""
)

# The minimal loop plus what miniq's other issues require of every job, with
# none of miniq's code: the queue's durable claim and record (a rename and a
# directory fsync before the job starts; the record written, fsynced, renamed
# and its directory fsynced after it), the scope's properties as
# scope.py sets them for a job without limits, a keeper (``cat`` on a pipe)
# moved from scope to scope so that the scope outlives its job, the wait for
# systemd's JobRemoved signal instead of polling /proc, the job's output
# through pipes read to the end, and the kernel's accounting read from the
# scope's cgroup before the keeper moves on.  The gap between it and miniq is
# what miniq's own bookkeeping costs (validation, leases, fences, journal).
FLOOR = (
    """
import os, sys, time
from pystemd.dbuslib import DBus, apply_signature
n, root = int(sys.argv[1]), sys.argv[2]
bus = DBus(); bus.open()
removed = set()
def on_removed(msg, error=None, userdata=None):
    msg.process_reply(False); removed.add(bytes(msg.body[1]))
bus.match_signal(b"org.freedesktop.systemd1", b"/org/freedesktop/systemd1", b"org.freedesktop.systemd1.Manager", b"JobRemoved", on_removed)
def start(unit, pids):
    props = [(b"Description", b"s", b"floor job"), (b"PIDs", b"au", pids), (b"CollectMode", b"s", b"inactive-or-failed"),
             (b"MemoryAccounting", b"b", True), (b"TasksAccounting", b"b", True), (b"TimeoutStopUSec", b"t", 10_000_000),
             (b"OOMPolicy", b"s", b"continue")]
    args = apply_signature(b"ss", [unit.encode(), b"fail"]) + [(ord(b"a"), b"(sv)")]
    for name, sig, value in props:
        args += [(ord(b"r"), b"sv"), (ord(b"s"), name), (ord(b"v"), sig)] + apply_signature(sig, [value]) + [(-1, None), (-1, None)]
    args += [(-1, None), (ord(b"a"), b"(sa(sv))"), (-1, None)]
    body = bus.call_method(b"org.freedesktop.systemd1", b"/org/freedesktop/systemd1", b"org.freedesktop.systemd1.Manager",
                           b"StartTransientUnit", args).body
    return bytes(body[0] if isinstance(body, list) else body)
def wait_job(job):
    deadline = time.monotonic() + 10
    while job not in removed:
        bus.process()
        if job not in removed:
            assert time.monotonic() < deadline, f"no JobRemoved for {job}"
            bus.wait(1_000_000)
    removed.discard(job)
"""
    + PLACED
    + """
def accounting(pid):
    unified = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    found = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hid, controllers, path = line.rstrip("\\n").split(":", 2)
            if hid == "0":
                with open(f"{unified}{path}/cpu.stat") as c:
                    found["cpu"] = c.read()
            elif "memory" in controllers.split(","):
                with open(f"/sys/fs/cgroup/memory{path}/memory.max_usage_in_bytes") as c:
                    found["memory"] = c.read()
    return found
for d in ("queue", "running", "done", "tmp"):
    os.makedirs(f"{root}/{d}", exist_ok=True)
dirs = {d: os.open(f"{root}/{d}", os.O_RDONLY) for d in ("running", "done")}
for i in range(n):
    with open(f"{root}/queue/{i:06d}.json", "w") as f:
        f.write('{"name": "true", "args": []}')
lifeline_r, lifeline_w = os.pipe()
keeper = os.posix_spawn("/bin/cat", ["cat"], {}, file_actions=[(os.POSIX_SPAWN_DUP2, lifeline_r, 0)], setsid=True)
t = time.perf_counter()
for i in range(n):
    name = f"{i:06d}.json"
    os.rename(f"{root}/queue/{name}", f"{root}/running/{name}")
    os.fsync(dirs["running"])
    with open(f"{root}/running/{name}") as f:
        f.read()
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w); os.close(out_r); os.dup2(out_w, 1); os.dup2(out_w, 2)
        os.read(r, 1); os.execv("/bin/true", ["true"])
    os.close(r); os.close(out_w)
    unit = f"floor-{os.getpid()}-{i}.scope"
    wait_job(start(unit, [pid, keeper]))
    assert placed(pid, unit) and placed(keeper, unit)
    os.write(w, b"g"); os.close(w)
    while os.read(out_r, 65536):
        pass
    os.close(out_r)
    status = os.waitpid(pid, 0)[1]
    used = accounting(keeper)
    fd = os.open(f"{root}/tmp/{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, repr((status, used)).encode()); os.fsync(fd); os.close(fd)
    os.rename(f"{root}/tmp/{name}", f"{root}/done/{name}")
    os.fsync(dirs["done"])
    os.unlink(f"{root}/running/{name}")
print(f"{time.perf_counter() - t:.4f} {n}")
"""
)

# The least a cold processor could do, started as a service as miniq's is:
# import pystemd's bus module alone (as miniq does, without the package's
# lxml), connect, fork a gated child, StartTransientUnit with its PID, wait
# until /proc shows it in the scope, release it to exec the job
# (``stamp.job PATH``).  No queue, no claim, no limits, no journal.
COLD_REFERENCE = (
    """
import importlib.util, os, sys, time
spec = importlib.util.find_spec("pystemd")
sys.modules["pystemd"] = importlib.util.module_from_spec(spec)
from pystemd.dbuslib import DBus, apply_signature
job, path = sys.argv[1], sys.argv[2]
bus = DBus(); bus.open()
"""
    + SCOPE
    + """
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(w); os.read(r, 1); os.execv(job, [job, path])
os.close(r)
unit = f"cold-ref-{os.getpid()}.scope"
start(unit, pid)
while not placed(pid, unit):
    time.sleep(0.0005)
os.write(w, b"g"); os.close(w)
os.waitpid(pid, 0)
"""
)


def units(action: str) -> None:
    """Stop (or start) the installed units, so that no other processor takes
    jobs of a measurement that runs its own."""
    names = ["miniq-process.path", "miniq-process.timer"] + (["miniq-process.service"] if action == "stop" else [])
    if action == "start":
        # Short drains start the path unit more often than its start limit
        # (5 in 10 s) allows; reset-failed clears the count.
        subprocess.run(["systemctl", "reset-failed", *names], check=False, stderr=subprocess.DEVNULL)
    subprocess.run(["systemctl", action, *names], check=True)


def in_service(code: str, *args: str) -> str:
    """Run Python ``code`` as a transient system service (like the processor is)."""
    proc = subprocess.run(
        ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", "-p", "Type=oneshot", PY, "-c", code, *args],
        check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return proc.stdout.strip()


def fresh(root: str) -> None:
    for d in ("queue", "delayed", "running", "done", "failed", "tmp", "rejected", "cancel", "priorities"):
        shutil.rmtree(f"{root}/{d}", ignore_errors=True)


def pid1_cpu() -> float:
    """CPU seconds systemd (PID 1 of the sandbox) has used so far."""
    fields = Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(root: str, n: int, parallel: int, limit: int = 0) -> dict[str, float]:
    fresh(root)
    units("stop")
    try:
        before = pid1_cpu()
        seconds, done, _ = in_service(DRAIN, root, str(n), str(parallel), str(limit)).split()
        return {"seconds": float(seconds), "jobs": int(done), "pid1_cpu": pid1_cpu() - before}
    finally:
        units("start")


def profile(root: str, n: int, top: int = 25) -> dict[str, object]:
    """A parallel-1 drain of ``n`` trivial jobs under cProfile: where the
    processor's time per job goes (its own code, the bus, the kernel)."""
    fresh(root)
    units("stop")
    out = str(Path(root).parent / "drain.pstats")
    code = DRAIN.replace("s = Processor(", "import cProfile\nprof = cProfile.Profile()\nprof.enable()\ns = Processor(").replace(
        "dt = time.perf_counter() - t\n", "dt = time.perf_counter() - t\nprof.disable()\nprof.dump_stats(sys.argv[5])\n"
    )
    try:
        seconds, done, _ = in_service(code, root, str(n), "1", "0", out).split()
    finally:
        units("start")
    import io
    import pstats

    text = io.StringIO()
    stats = pstats.Stats(out, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    return {"seconds": float(seconds), "jobs": int(done), "text": text.getvalue()}


def reference(n: int, loops: int = 1) -> dict[str, float]:
    """``loops`` minimal loops side by side, each as its own service; the
    jobs per second of all together (from the first start to the last end)."""
    before = pid1_cpu()
    t = time.perf_counter()
    cmd = ["systemd-run", "--wait", "--pipe", "--quiet", "--collect", "-p", "Type=oneshot", PY, "-c", REFERENCE, str(n)]
    procs = [subprocess.Popen([*cmd, str(k)], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) for k in range(loops)]
    done = sum(int(p.communicate()[0].split()[1]) for p in procs)
    if any(p.returncode for p in procs):
        raise RuntimeError("a reference loop failed")
    return {"seconds": time.perf_counter() - t, "jobs": done, "pid1_cpu": pid1_cpu() - before}


def floor(root: str, n: int) -> dict[str, float]:
    """The FLOOR loop as a service, in a directory of its own beside ``root``."""
    work = str(Path(root).parent / "floor")
    shutil.rmtree(work, ignore_errors=True)
    before = pid1_cpu()
    seconds, done = in_service(FLOOR, str(n), work).split()
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": float(seconds), "jobs": int(done), "pid1_cpu": pid1_cpu() - before}


def _stamp_file(path: str) -> float | None:
    try:
        text = Path(path).read_text().strip()
        return float(text) if text else None
    except (OSError, ValueError):
        return None


def _wait_stamp(path: str, timeout: float = 30) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _stamp_file(path)
        if value is not None:
            return value
        time.sleep(0.001)
    raise TimeoutError(path)


def latency(root: str, samples: int, spacing: float) -> dict[str, list[float]]:
    """From just before a submit command starts to the job's first instruction.
    Each kind's samples come one after another, ``spacing`` seconds apart (so
    with a short spacing miniq's processor is still lingering: warm)."""
    out: dict[str, list[float]] = {"miniq": [], "systemd-run": [], "nq": [], "tsp": [], "processor": []}
    stamps = f"{root}/../stamps-{spacing}"
    os.makedirs(stamps, exist_ok=True)
    env = dict(os.environ, NQDIR=f"{root}/../nq", TS_SOCKET=f"{root}/../tsp.socket")
    write = 'date +%s.%N > "$0"'
    for kind in ("miniq", "systemd-run", "nq", "tsp"):
        for i in range(samples):
            path = f"{stamps}/{kind}-{i}"
            t0 = time.time()
            if kind == "miniq":
                subprocess.run([MINIQ, "--root", root, "enqueue", "stamp", path], check=True, stdout=subprocess.DEVNULL)
            elif kind == "systemd-run":
                subprocess.run(["systemd-run", "--no-block", "--quiet", "--collect", "sh", "-c", write, path], check=True)
            elif kind == "nq":
                subprocess.run(["nq", "sh", "-c", write, path], check=True, stdout=subprocess.DEVNULL, env=env)
            else:
                subprocess.run(["tsp", "sh", "-c", write, path], check=True, stdout=subprocess.DEVNULL, env=env)
            stamp = _wait_stamp(path)
            out[kind].append(stamp - t0)
            if kind == "miniq":
                out["processor"].append(stamp - _service_started())
            time.sleep(spacing)
    subprocess.run(["tsp", "-K"], env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return out


def busy_latency(root: str, samples: int, parallel: int) -> dict[str, list[float]]:
    """As ``latency``'s warm row, while ``parallel`` - 1 long jobs hold slots of a
    processor with ``parallel`` slots: does a free slot start a new job at once?"""
    out: dict[str, list[float]] = {"miniq": []}
    stamps = f"{root}/../stamps-busy"
    os.makedirs(stamps, exist_ok=True)
    conf = Path(root) / "miniq.conf"
    conf.write_text(f"[processor]\nparallel = {parallel}\n")
    release = f"{stamps}/release"
    blockers = []
    try:
        for _ in range(parallel - 1):
            proc = subprocess.run([MINIQ, "--root", root, "enqueue", "block", release], check=True, capture_output=True, text=True)
            blockers.append(proc.stdout.strip())
        deadline = time.monotonic() + 60
        while sum(1 for n in os.listdir(f"{root}/running") if n.endswith(".json")) < parallel - 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the long jobs did not start")
            time.sleep(0.05)
        for i in range(samples):
            path = f"{stamps}/miniq-{i}"
            t0 = time.time()
            subprocess.run([MINIQ, "--root", root, "enqueue", "stamp", path], check=True, stdout=subprocess.DEVNULL)
            out["miniq"].append(_wait_stamp(path) - t0)
            time.sleep(0.5)
    finally:
        Path(release).touch()
        subprocess.run([MINIQ, "--root", root, "wait", *blockers], check=False, stdout=subprocess.DEVNULL)
        conf.unlink(missing_ok=True)
    return out


def cold_reference(root: str, samples: int, spacing: float) -> dict[str, list[float]]:
    """COLD_REFERENCE as a oneshot service, from the service's start to the
    job's first instruction, ``spacing`` seconds apart (as latency's cold row)."""
    out: dict[str, list[float]] = {"reference": []}
    stamps = f"{root}/../stamps-cold-ref"
    os.makedirs(stamps, exist_ok=True)
    for i in range(samples):
        path, unit = f"{stamps}/{i}", f"bench-cold-ref-{i}.service"
        subprocess.run(
            ["systemd-run", "--unit", unit, "--remain-after-exit", "--quiet", "-p", "Type=oneshot",
             PY, "-c", COLD_REFERENCE, f"{root}/jobs/stamp.job", path],
            check=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        stamp = _wait_stamp(path)
        out["reference"].append(stamp - _service_started(unit))
        subprocess.run(["systemctl", "stop", unit], check=True)
        time.sleep(spacing)
    return out


def _service_started(unit: str = "miniq-process.service") -> float:
    """When ``unit`` last left "inactive" (its process was started), in
    seconds since the epoch; for miniq's, the path unit fired just before."""
    text = subprocess.run(
        ["systemctl", "show", "--property=InactiveExitTimestamp", "--timestamp=us+utc", "--value", unit],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S.%f %Z").replace(tzinfo=timezone.utc).timestamp()


def enqueue_wait(root: str, samples: int) -> dict[str, list[float]]:
    """enqueue then wait (two commands), enqueue --wait (one), and systemd-run --wait, taking turns."""
    out: dict[str, list[float]] = {"miniq": [], "one": [], "systemd-run": []}
    for _ in range(samples):
        t = time.perf_counter()
        job_id = subprocess.run([MINIQ, "--root", root, "enqueue", "true"], check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run([MINIQ, "--root", root, "wait", job_id], check=True)
        out["miniq"].append(time.perf_counter() - t)
        time.sleep(0.3)
        out["one"].append(wall([MINIQ, "--root", root, "enqueue", "--wait", "true"]))
        time.sleep(0.3)
        out["systemd-run"].append(wall(["systemd-run", "--wait", "--quiet", "--collect", "true"]))
        time.sleep(0.3)
    return out


def bulk(root: str, n: int, samples: int) -> dict[str, list[float]]:
    """Seconds for `miniq enqueue --stdin` to queue ``n`` jobs durably and print their ids,
    and for bulk_floor.py (the least a durable batch does, in plain Python) beside it: creating
    files costs very different amounts in different directories of one ext4 file system, so
    the floor runs in the same root, in a fresh tmp/ and queue/ as miniq's, sample for sample."""
    lines = "".join(f"{i}\n" for i in range(n)).encode()
    floor = str(Path(__file__).resolve().parent / "bulk_floor.py")
    out: dict[str, list[float]] = {"seconds": [], "floor": []}
    units("stop")
    try:
        for _ in range(samples):
            fresh(root)
            t = time.perf_counter()
            proc = subprocess.run([MINIQ, "--root", root, "enqueue", "--stdin", "true"], input=lines, check=True, capture_output=True)
            out["seconds"].append(time.perf_counter() - t)
            assert len(proc.stdout.split()) == n
            fresh(root)
            t = time.perf_counter()
            proc = subprocess.run([PY, floor, root, str(n)], check=True, capture_output=True)
            out["floor"].append(time.perf_counter() - t)
            assert len(proc.stdout.split()) == n
    finally:
        fresh(root)
        units("start")
    return out


def fill(root: str, n: int) -> float:
    """Queue ``n`` jobs through the library, durably; returns seconds taken."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from miniq.store.queue import Queue

    q = Queue(Path(root))
    t = time.perf_counter()
    for _ in range(n):
        q.enqueue("true", [])
    return time.perf_counter() - t


def scale(root: str, queued: int, drained: int) -> dict[str, float]:
    """Per-job processor time, processor start, `miniq list` and its memory, with ``queued`` jobs."""
    fresh(root)
    units("stop")
    try:
        return _scale(root, queued, drained)
    finally:
        units("start")


def _scale(root: str, queued: int, drained: int) -> dict[str, float]:
    filled = fill(root, queued)
    out: dict[str, float] = {"enqueue_per_s": queued / filled}
    out["list_s"] = min(wall([MINIQ, "--root", root, "list"]) for _ in range(5))
    out["listdir_s"] = min(_listdir_time(f"{root}/queue") for _ in range(5))  # the floor: the kernel's one listing
    out["list_json_all_kib"] = peak_kib([MINIQ, "--root", root, "list", "--all", "--json"])
    out["show_s"] = min(wall([MINIQ, "--root", root, "show", _first_id(root)]) for _ in range(5))
    seconds, done, began = in_service(DRAIN, root, "0", "1", str(drained)).split()
    out["drain_s"], out["drained"] = float(seconds), int(done)
    out["per_job_s"] = _steady_per_job(root)
    out["start_s"] = _first_start(root) - float(began)
    return out


def _first_start(root: str) -> float:
    starts = [json.loads(Path(f"{root}/done/{n}").read_text())["result"]["started"] for n in os.listdir(f"{root}/done")]
    return datetime.fromisoformat(min(starts)).timestamp()


def _listdir_time(path: str) -> float:
    started = time.perf_counter()
    os.listdir(path)
    return time.perf_counter() - started


def _first_id(root: str) -> str:
    return min(os.listdir(f"{root}/queue")).split("-", 1)[1][:-5]


def _steady_per_job(root: str) -> float:
    """Seconds per job between the first start and the last end (no processor start)."""
    starts, ends = [], []
    for name in os.listdir(f"{root}/done"):
        result = json.loads(Path(f"{root}/done/{name}").read_text())["result"]
        starts.append(result["started"])
        ends.append(result["ended"])
    span = datetime.fromisoformat(max(ends)).timestamp() - datetime.fromisoformat(min(starts)).timestamp()
    return span / max(len(ends) - 1, 1)


def logs(root: str, samples: int) -> dict[str, list[float]]:
    job_id = subprocess.run([MINIQ, "--root", root, "enqueue", "stamp", "/dev/null"], check=True, capture_output=True, text=True).stdout
    job_id = job_id.strip()
    subprocess.run([MINIQ, "--root", root, "wait", job_id], check=True)
    out: dict[str, list[float]] = {"miniq": [], "journalctl": []}
    for _ in range(samples):
        out["miniq"].append(wall([MINIQ, "--root", root, "logs", job_id]))
        out["journalctl"].append(wall(["journalctl", "--no-pager", "-o", "cat", f"MINIQ_JOB_ID={job_id}"]))
    return out


def big_file_rss(root: str) -> dict[str, float]:
    """The processor's peak RSS with a 100 MB file in queue/ (issue: under 64 MiB)."""
    fresh(root)
    os.makedirs(f"{root}/queue", exist_ok=True)
    with open(f"{root}/queue/0000-20261129-000000-000000-00000000.json", "wb") as f:
        f.write(b"x" * (100 * 1024 * 1024))
    code = DRAIN + "\nimport resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    units("stop")
    try:
        lines = in_service(code, root, "1", "1", "0").splitlines()
    finally:
        units("start")
    return {"peak_kib": float(lines[-1])}


def main() -> None:
    root, what, *args = sys.argv[1:]
    funcs = {
        "enqueue": lambda: enqueue(root, int(args[0])),
        "drain": lambda: drain(root, int(args[0]), int(args[1])),
        "profile": lambda: profile(root, int(args[0])),
        "reference": lambda: reference(int(args[0]), int(args[1]) if len(args) > 1 else 1),
        "floor": lambda: floor(root, int(args[0])),
        "latency": lambda: latency(root, int(args[0]), float(args[1])),
        "cold_reference": lambda: cold_reference(root, int(args[0]), float(args[1])),
        "busy_latency": lambda: busy_latency(root, int(args[0]), int(args[1])),
        "enqueue_wait": lambda: enqueue_wait(root, int(args[0])),
        "bulk": lambda: bulk(root, int(args[0]), int(args[1])),
        "scale": lambda: scale(root, int(args[0]), int(args[1])),
        "api": lambda: {"per_s": int(args[0]) / fill(root, int(args[0]))},
        "logs": lambda: logs(root, int(args[0])),
        "big_file_rss": lambda: big_file_rss(root),
    }
    print(json.dumps(funcs[what]()))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
