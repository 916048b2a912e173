"""Real power cuts of a Debian guest that runs a busy queue, and what must hold after each.

    sudo .venv/bin/python -m tests.vm.powercut [--cuts N] [--seed S]   # as long as asked; prints the seed

The guest (tests/vm: qemu under TCG, Debian 12, systemd as PID 1) has its
queue on a disk of its own, ``/dev/vdb`` mounted at ``/var/lib/miniq`` once
it booted (before miniq's units start), and runs miniq from the Debian
package of this checkout.  Each cycle boots the
guest on a fresh copy of its root (only the queue disk lives on), checks the
queue as the cut left it, starts miniq's units and a workload, and kills
qemu at a random moment.

Why a killed qemu is a power cut, and which disk it models.  The queue disk
is a raw file attached with ``cache=writeback``: a write the guest's disk
completed is in the host's page cache, which outlives qemu (the host keeps
running), and a flush the guest issues becomes an fdatasync on the host.
Killing qemu therefore loses exactly what a power cut loses on a disk that
keeps what it acknowledged: everything still in the *guest's* page cache
and every write not yet issued.  That is what a missing or misplaced fsync
exposes.  A disk whose own volatile cache drops or reorders acknowledged
writes that were not flushed is the stronger fault; dmlog.py replays a
recorded write log to each flush point for that.  The guest's root is a
qcow2 overlay with ``cache=unsafe``, thrown away at each cut (it holds no
queue data, and a qcow2 killed mid-write may not be consistent).

The workload: three clients (one calls ``miniq enqueue``, two the library,
which is several times faster under emulation) loop over enqueues of plain
jobs (0-2 s), delayed jobs (``--in``), jobs that fail once and succeed on a
retry (``--retries 2``) and jobs that run ``--after`` the client's previous
one; parallel 2, lease 5 s.  Side effects leave the guest at once: a client
writes ``ENQ id kind`` after ``miniq enqueue`` returned, a job writes
``RUN id attempt boot time`` as its first act (the guest's boot id: which
boot it ran in), each to a virtio-serial port that qemu appends to a host
file (through a relay in the guest that acknowledges a line only once it was
written to the port).

What is checked (``check_state`` after every cut, ``check_end`` after the
last boot, once the queue drained; tests/test_durability_checks.py plants a
defect for each and sees it caught):

* every job whose enqueue returned is in exactly one state (at most a claim
  left beside its newer state, which recovery removes);
* no file in the root is empty or partial (every job file, claim, record
  and staging file parses; cancel requests say "cancel"), apart from the
  files whose existence is their content (``queue/wake``, ``priorities/``,
  and clock probes ``tmp/clock@...``, empty by design: one a cut left is
  from an earlier boot, which a processor cannot prove dead from its name
  (another machine may share the hostname), so it goes after an hour);
* a published record never changes, compared whole, and its job never runs
  again;
* every acknowledged job ends as its kind calls for: done (exit 0), a
  ``flaky`` job within its two retries, an ``--after`` job only once its
  parent succeeded and after it ended; a power cut never fails a job;
* each job's runs, counted by its marks, match its recorded attempts: a
  mark for every run the processor recorded, none for a run it did not,
  never two for one attempt; an ``interrupted`` attempt may lack a mark
  (the cut came after the claim, before the job's first instruction);
* every interrupted attempt is explained by a cut: its cause is ``lost``
  (judged by a later boot), its run (if it marked one) was in a boot that
  was cut, the job never ran again in that same boot, and there are at most
  cuts x parallel of them;
* the queue drains after the last boot and no miniq unit has failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .image import Image, build
from .machine import VM, stop_processing

ROOT = "/var/lib/miniq"
REAL_RUNS = {"exited", "signaled", "oom", "timeout"}
PARALLEL = 2
#: What every guest's system queue runs with: /etc/miniq/miniq.conf, the package's conffile.
CONF = f"[processor]\nparallel = {PARALLEL}\nlease = 5s\n"

#: Units a power-cut guest does without, for boots twice as fast under emulation.
FAST_BOOT_MASKS = [
    "systemd-logind.service", "systemd-update-utmp.service", "systemd-binfmt.service", "rpcbind.service", "rpcbind.socket",
    "run-rpc_pipefs.mount", "nfs-client.target", "rpc-statd-notify.service", "systemd-udevd.service",
    "systemd-udevd-control.socket", "systemd-udevd-kernel.socket", "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "dev-hugepages.mount", "kmod-static-nodes.service",
    "systemd-modules-load.service", "modprobe@.service", "systemd-journal-flush.service", "systemd-random-seed.service",
    "e2scrub_reap.service", "systemd-pstore.service", "cron.service", "ssh.service",
]  # fmt: skip

RELAY = r'''#!/usr/bin/python3
"""Lines from local clients to the virtio port tb.marks; "ok" once written."""
import os, socket, threading
port = next(f"/dev/{v}" for v in os.listdir("/sys/class/virtio-ports")
            if open(f"/sys/class/virtio-ports/{v}/name").read().strip() == "tb.marks")
fd = os.open(port, os.O_WRONLY)
lock = threading.Lock()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 7777))
srv.listen(256)
def serve(conn):
    with conn, conn.makefile("rb") as lines:
        for line in lines:
            with lock:
                os.write(fd, line)
            conn.sendall(b"ok\n")
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
'''

RELAY_UNIT = """[Unit]
Description=test bed: marks to the host
DefaultDependencies=no
After=local-fs.target

[Service]
ExecStart=/usr/bin/python3 /usr/local/lib/tb-marks.py
Restart=always

[Install]
WantedBy=sysinit.target
"""

MARK = """mark() {
    until exec 3<>/dev/tcp/127.0.0.1/7777; do sleep 0.05; done 2>/dev/null
    printf '%s\\n' "$*" >&3
    read -r _ <&3
    exec 3>&-
}
"""

#: A run's mark: the job, its attempt, the boot it ran in and when (the guest's clock).
RUN_MARK = 'mark "RUN $MINIQ_JOB_ID $MINIQ_ATTEMPT $(cat /proc/sys/kernel/random/boot_id) $(date +%s.%N)"\n'
WORK = "#!/bin/bash\n" + MARK + RUN_MARK + 'sleep "${1:-0}"\n'
FLAKY = "#!/bin/bash\n" + MARK + RUN_MARK + '[ "$MINIQ_ATTEMPT" = 1 ] && exit 1\nexit 0\n'

CLIENT = (
    "#!/bin/bash\n"
    + MARK
    + """RANDOM=$1
prev=
while true; do
    k=$((RANDOM % 10)); r=$((RANDOM % 5)); secs=$(( r > 2 ? r - 2 : 0 ))
    kind=work
    case $k in
        0|1|2|3) id=$(miniq enqueue work $secs) ;;
        4|5) id=$(miniq enqueue --in $((1 + RANDOM % 3))s work $secs); kind=delayed ;;
        6|7) id=$(miniq enqueue --retries 2 flaky); kind=flaky ;;
        *) if [ -n "$prev" ]; then id=$(miniq enqueue --after "$prev" work 0); kind="after:$prev"; else id=$(miniq enqueue work 0); fi ;;
    esac || continue
    [ -n "$id" ] && mark "ENQ $id $kind" && prev=$id
done
"""
)

#: A client through the library, a few times faster than the CLI's start under emulation.
API_CLIENT = r"""
import random, socket, sys
from pathlib import Path
from miniq import Queue
from miniq.core.schedule import Schedule
rng = random.Random(int(sys.argv[1]))
queue = Queue(Path("/var/lib/miniq"))
def mark(line):
    while True:
        try:
            with socket.create_connection(("127.0.0.1", 7777)) as s:
                s.sendall(line.encode() + b"\n")
                s.recv(3)
                return
        except OSError:
            pass
prev = None
import time
while True:
    k, secs = rng.randrange(10), str(rng.choice([0, 0, 0, 1, 2]))
    kind = "work"
    if k < 4:
        job = queue.enqueue("work", [secs])
    elif k < 6:
        job, kind = queue.enqueue("work", [secs], schedule=Schedule(not_before=time.time() + rng.uniform(1, 4))), "delayed"
    elif k < 8:
        job, kind = queue.enqueue("flaky", [], schedule=Schedule(retries=2)), "flaky"
    else:
        job = queue.enqueue("work", ["0"], schedule=Schedule(after=(prev,) if prev else ()))
        kind = f"after:{prev}" if prev else "work"
    mark(f"ENQ {job.id} {kind}")
    prev = job.id
    time.sleep(rng.uniform(0.5, 2.0))  # about what the processor keeps up with under emulation
"""

#: Reads the whole root as it is and prints it as JSON (runs in the guest, as root).
SNAPSHOT = r"""
import json, os, sys
sys.path.insert(0, "/usr/lib/python3/dist-packages")
from miniq.store.layout import parse_claim_name, parse_delayed_name, parse_queue_name
root = sys.argv[1]
out = {"files": [], "entries": []}
for dirpath, dirs, names in os.walk(root):
    rel = os.path.relpath(dirpath, root)
    if rel.split("/")[0] == "jobs" or rel.startswith("lost+found"):
        continue
    for name in names:
        path = os.path.join(dirpath, name)
        data = open(path, "rb").read()
        kind = "json"
        try:
            value = json.loads(data)
            parsed = isinstance(value, dict)
        except ValueError:
            parsed, value = False, None
        path = os.path.normpath(os.path.join(rel, name))
        out["files"].append({"path": path, "size": len(data), "json": parsed, "head": data[:40].decode("latin-1")})
        top = rel.split("/")[0]
        job = None
        if top == "queue":
            p = parse_queue_name(name); job = p[1] if p else None
        elif top == "delayed":
            p = parse_delayed_name(name); job = p[1] if p else None
        elif top == "running":
            p = parse_claim_name(name); job = p[0] if p else None
        elif top in ("done", "failed") and name.endswith(".json"):
            job = name[:-5]
        if job:
            entry = {"state": top, "id": job, "name": name}
            if top in ("done", "failed") and parsed:
                entry["record"] = value
            out["entries"].append(entry)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Run:
    """One run of a job, as its first instruction marked it."""

    attempt: int
    boot: str
    at: float


@dataclass
class Ledger:
    """What the host saw: marks, and what each check found."""

    enqueued: set[str] = field(default_factory=set)
    kinds: dict[str, str] = field(default_factory=dict)  # id -> work, delayed, flaky or after:ID
    runs: dict[str, list[Run]] = field(default_factory=dict)
    records: dict[str, tuple[str, Any]] = field(default_factory=dict)  # id -> (state, the whole record) when first seen
    boots: list[str] = field(default_factory=list)  # boot ids, in order; every one but the last was cut
    stopped: set[str] = field(default_factory=set)  # boots whose processor was stopped in order (systemctl stop) before their cut
    checks: list[str] = field(default_factory=list)

    def read_marks(self, path: Path) -> None:
        self.enqueued, self.kinds, self.runs = set(), {}, {}
        for line in path.read_text(errors="replace").splitlines():
            self.take(line)

    def take(self, line: str) -> None:
        parts = line.split()
        if len(parts) in (2, 3) and parts[0] == "ENQ":
            self.enqueued.add(parts[1])
            self.kinds[parts[1]] = parts[2] if len(parts) == 3 else "work"
        elif len(parts) == 5 and parts[0] == "RUN" and parts[2].isdigit():
            self.runs.setdefault(parts[1], []).append(Run(int(parts[2]), parts[3], float(parts[4])))


class Failure(AssertionError):
    pass


def check_state(snapshot: dict[str, Any], ledger: Ledger, label: str) -> dict[str, int]:
    """The invariants that hold at any moment the queue is at rest (module comment)."""
    problems = []
    for f in snapshot["files"]:
        top = f["path"].split("/")[0]
        if top == "priorities" or f["path"] == "queue/wake" or f["path"].startswith("tmp/clock@"):
            continue  # their existence (a clock probe: its time) is their content
        if top == "cancel":
            if f["head"] != "cancel\n":
                problems.append(f"{f['path']}: a cancel request of {f['size']} bytes: {f['head']!r}")
        elif f["path"] == "miniq.conf":
            continue
        elif f["size"] == 0 or not f["json"]:
            problems.append(f"{f['path']}: {f['size']} bytes, {'not JSON' if f['size'] else 'empty'}: {f['head']!r}")
    places: dict[str, list[dict[str, Any]]] = {}
    for entry in snapshot["entries"]:
        places.setdefault(entry["id"], []).append(entry)
    leftovers = 0
    for job_id in ledger.enqueued:
        found = places.get(job_id, [])
        settled = [e for e in found if e["state"] != "running"]
        claims = [e for e in found if e["state"] == "running"]
        if len(settled) > 1 or len(claims) > 1 or not found:
            problems.append(f"job {job_id} is in {[e['name'] for e in found] or 'no state at all'}")
        elif settled and claims:
            leftovers += 1  # a claim beside its newer state: recovery removes it
    for entry in snapshot["entries"]:
        if entry["state"] in ("done", "failed"):
            # A published record is final: compared whole, every field of it.
            key = (entry["state"], entry.get("record"))
            first = ledger.records.setdefault(entry["id"], key)
            if first != key:
                problems.append(f"record of {entry['id']} changed: was {json.dumps(first)[:300]}, is {json.dumps(key)[:300]}")
    for job_id, (state, _) in ledger.records.items():
        if not any(e["state"] == state for e in places.get(job_id, [])):
            problems.append(f"the {state} record of {job_id} is gone")
    if problems:
        raise Failure(f"{label}: " + "; ".join(problems[:20]))
    ledger.checks.append(label)
    return {"jobs": len(places), "files": len(snapshot["files"]), "leftover claims": leftovers}


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def check_end(snapshot: dict[str, Any], ledger: Ledger, parallel: int = 2) -> dict[str, int]:
    """After the last boot and a drain: every job ended as its kind calls for,
    its runs match its attempts, and every run cut short is explained by a cut
    (``ledger.boots``: every boot but the last was cut)."""
    check_state(snapshot, ledger, "after the drain")
    problems = []
    final = {e["id"]: e["record"] for e in snapshot["entries"] if e["state"] in ("done", "failed")}
    unsettled = [e["name"] for e in snapshot["entries"] if e["state"] not in ("done", "failed")]
    if unsettled:
        problems.append(f"not drained: {unsettled[:10]}")
    cut_boots = set(ledger.boots[:-1])
    counts = {"jobs": len(final), "done as their kind calls for": 0, "runs": 0, "attempts": 0, "interrupted without a mark": 0,
              "interrupted by a cut": 0, "flaky within its retries": 0, "after jobs after their parent": 0}  # fmt: skip
    for job_id in ledger.enqueued | set(ledger.runs):
        record = final.get(job_id)
        runs = ledger.runs.get(job_id, [])
        if record is None:
            if job_id in ledger.enqueued:
                problems.append(f"job {job_id} has no record")
            elif runs:
                problems.append(f"job {job_id} ran ({runs}) but is nowhere")
            continue
        attempts = record.get("attempts") or []
        outcomes = [a.get("outcome") for a in attempts]
        marks = [r.attempt for r in runs]
        counts["runs"] += len(marks)
        counts["attempts"] += len(attempts)
        if len(set(marks)) != len(marks):
            problems.append(f"job {job_id}: two runs as the same attempt: {sorted(marks)}")
        for k in marks:
            if k > len(attempts):
                problems.append(f"job {job_id}: run {k} is not among its {len(attempts)} recorded attempts {outcomes}")
        by_attempt = {r.attempt: r for r in runs}
        for k, attempt in enumerate(attempts, 1):
            outcome = attempt.get("outcome")
            if outcome in REAL_RUNS and k not in by_attempt:
                problems.append(f"job {job_id}: attempt {k} ({outcome}) is recorded, but it never ran")
            elif outcome not in REAL_RUNS and outcome != "interrupted" and k in by_attempt:
                problems.append(f"job {job_id}: attempt {k} is recorded {outcome}, but it ran")
            elif outcome == "interrupted" and attempt.get("cause") == "delayed":
                # systemd did not start its scope in time (an emulated guest on a busy host): it never ran.
                counts["scope not ready in time"] = counts.get("scope not ready in time", 0) + 1
                if k in by_attempt:
                    problems.append(f"job {job_id}: attempt {k} is recorded as never started (its scope was late), but it ran")
            elif outcome == "interrupted" and attempt.get("cause") == "stopped" and ledger.stopped:
                # The write log's recorded run ends with ``systemctl stop``: its running jobs are
                # stopped, recorded so by their processor, and may run again in the next boot.
                counts["interrupted by an orderly stop"] = counts.get("interrupted by an orderly stop", 0) + 1
                run = by_attempt.get(k)
                if run is not None and run.boot not in ledger.stopped:
                    problems.append(f"job {job_id}: attempt {k} ran in boot {run.boot[:8]}, which was not stopped, and was stopped")
            elif outcome == "interrupted":
                # Nothing but power cuts interrupts a run here: judged by the next boot, cause lost.
                if attempt.get("cause") != "lost":
                    problems.append(f"job {job_id}: attempt {k} interrupted with cause {attempt.get('cause')!r} "
                                    f"({attempt.get('reason')}), where only cuts happened")  # fmt: skip
                counts["interrupted by a cut"] += 1
                run = by_attempt.get(k)
                if run is None:
                    counts["interrupted without a mark"] += 1
                elif run.boot not in cut_boots:
                    problems.append(f"job {job_id}: attempt {k} ran in boot {run.boot[:8]}, which was not cut, and was interrupted")
                elif any(r.attempt > k and r.boot == run.boot for r in runs):
                    problems.append(
                        f"job {job_id}: ran again in boot {run.boot[:8]} after its run {k} there was cut short: a second run without a cut"
                    )
        if job_id not in ledger.enqueued:
            continue
        kind = ledger.kinds.get(job_id, "work")
        result = record.get("result") or {}
        if record.get("state") != "done" or result.get("outcome") != "exited" or result.get("exit_code") != 0:
            problems.append(f"job {job_id} ({kind}) ended {record.get('state')}: {result.get('outcome')} ({result.get('reason')})")
            continue
        counts["done as their kind calls for"] += 1
        if kind == "flaky":
            failures = sum(1 for a in attempts if a.get("outcome") == "exited" and a.get("exit_code") != 0)
            if failures > 2:
                problems.append(f"job {job_id} (flaky, --retries 2) failed {failures} times before it succeeded")
            else:
                counts["flaky within its retries"] += 1
        if kind.startswith("after:"):
            parent = final.get(kind[len("after:") :])
            first = min((r.at for r in runs), default=None)
            if parent is None or parent.get("state") != "done":
                problems.append(f"job {job_id} ran, but job {kind[6:]} it runs after did not succeed")
            elif first is not None and first < _timestamp(parent["result"]["ended"]):
                problems.append(f"job {job_id} ran at {first:.3f}, before job {kind[6:]} it runs after ended")
            else:
                counts["after jobs after their parent"] += 1
    # Each cut interrupts at most what its processor held: parallel runs.
    bound = len(cut_boots) * parallel
    stopped = counts.get("interrupted by an orderly stop", 0)
    if stopped > len(ledger.stopped) * parallel:
        problems.append(f"{stopped} attempts stopped, more than {len(ledger.stopped)} stops x parallel {parallel}")
    if counts["interrupted by a cut"] > bound:
        problems.append(
            f"{counts['interrupted by a cut']} interrupted attempts, more than {len(cut_boots)} cuts x parallel {parallel} explain"
        )
    counts["bound: cuts x parallel"] = bound
    if problems:
        raise Failure("after the drain: " + "; ".join(problems[:20]))
    return counts


class PowerCuts:
    """The guest, its disks and the host's files of one power-cut run."""

    def __init__(self, image: Image, deb: Path, work: Path, seed: int, log: Any = print) -> None:
        self.image, self.deb, self.work, self.rng, self.log = image, deb, work, random.Random(seed), log
        self.seed = seed
        self.queue_disk = work / "queue.img"
        self.marks = work / "marks.log"
        self.base = work / "installed.qcow2"
        self.ledger = Ledger()
        self.cycle = 0
        self.vm: VM | None = None

    def extra(self) -> list[str]:
        return [
            "-drive", f"file={self.queue_disk},if=virtio,format=raw,cache=writeback",
            "-chardev", f"file,id=marks,path={self.marks},append=on",
            "-device", "virtserialport,chardev=marks,name=tb.marks",
        ]  # fmt: skip

    def prepare(self) -> None:
        """The installed root (miniq, the relay, the queue disk's mount), made once."""
        self.work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["truncate", "-s", "384M", str(self.queue_disk)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "tbqueue", str(self.queue_disk)], check=True)
        self.marks.touch()
        vm = VM(self.image, "installer", self.work)
        vm.boot()
        try:
            vm.put("/tmp/miniq.deb", self.deb.read_bytes())
            vm.run("dpkg -i /tmp/miniq.deb", check=True, timeout=600)
            vm.put("/usr/local/lib/tb-marks.py", RELAY.encode(), "0755")
            vm.put("/etc/systemd/system/tb-marks.service", RELAY_UNIT.encode())
            vm.put("/etc/systemd/system/miniq-process.service.d/queue-disk.conf",
                   b"[Unit]\nRequiresMountsFor=/var/lib/miniq\nWants=tb-marks.service\nAfter=tb-marks.service\n")  # fmt: skip
            # The system queue's configuration is the package's conffile (/etc/miniq), on the root disk every boot starts from.
            vm.put("/etc/miniq/miniq.conf", CONF.encode())
            vm.put("/usr/local/bin/tb-client", CLIENT.encode(), "0755")
            vm.put("/usr/local/lib/tb-api-client.py", API_CLIENT.encode())
            vm.put("/usr/local/lib/tb-snapshot.py", SNAPSHOT.encode())
            # The units start after each check, not at boot (the check sees the queue as the cut left it).
            vm.run("systemctl enable tb-marks.service && systemctl disable miniq-process.path miniq-process.timer miniq-api.socket",
                   check=True)  # fmt: skip
            # Twenty boots under emulation: what this guest does not need goes (udev among
            # them: the queue disk is mounted by name after boot, before miniq starts).
            vm.run(f"systemctl mask {' '.join(FAST_BOOT_MASKS)}", check=True)
        finally:
            if vm.proc is not None and vm.proc.poll() is None and vm.sock is not None:
                vm.shutdown(keep=self.base)
            else:
                vm.close()
        assert self.base.exists(), "the installed root was not kept"

    def boot(self) -> VM:
        self.cycle += 1
        vm = VM(self.image, f"cycle{self.cycle}", self.work, base=self.base, extra=self.extra())
        vm.boot()
        self.vm = vm
        vm.run(f"mount /dev/vdb {ROOT}", check=True, timeout=300)  # ext4 replays its journal: what a boot does
        mounted = vm.run(f"findmnt -n -o SOURCE {ROOT}").stdout.strip()
        assert mounted == "/dev/vdb", f"the queue disk is not mounted at {ROOT}: {mounted!r}"
        self.ledger.boots.append(vm.run("cat /proc/sys/kernel/random/boot_id", check=True).stdout.strip())
        return vm

    def first_setup(self, vm: VM) -> None:
        vm.run(f"mkdir -p {ROOT}/jobs", check=True)
        vm.put(f"{ROOT}/jobs/work.job", WORK.encode(), "0755")
        vm.put(f"{ROOT}/jobs/flaky.job", FLAKY.encode(), "0755")
        vm.run("sync", check=True)

    def snapshot(self, vm: VM) -> dict[str, Any]:
        out = vm.run(f"python3 /usr/local/lib/tb-snapshot.py {ROOT}", check=True, timeout=300).stdout
        data: dict[str, Any] = json.loads(out)
        return data

    def start(self, vm: VM) -> None:
        """The units, one client of the command line and two of the library."""
        vm.run("systemctl start miniq-process.path miniq-process.timer", check=True)
        api = "/usr/bin/python3 /usr/local/lib/tb-api-client.py"
        commands = ["/usr/local/bin/tb-client", api, api]
        for n, command in enumerate(commands):
            vm.run(f"systemd-run --quiet --unit tb-client-{n} {command} {self.rng.randrange(1, 32767)}", check=True)

    def cut(self, low: float = 2.0, high: float = 8.0) -> float:
        """Let the workload run a random while, then pull the plug."""
        assert self.vm is not None
        after = self.rng.uniform(low, high)
        time.sleep(after)
        self.vm.kill()
        self.vm.close()  # removes the root overlay: the next boot is on a fresh copy
        self.vm = None
        return after

    def drain(self, vm: VM, timeout: float = 600) -> float:
        vm.run("systemctl start miniq-process.path miniq-process.timer", check=True)
        started = time.monotonic()
        while True:
            left = vm.run(f"ls {ROOT}/queue {ROOT}/delayed {ROOT}/running | grep -c json || true").stdout.strip()
            if left == "0":
                break
            if time.monotonic() - started > timeout:
                raise Failure(f"the queue did not drain in {timeout:.0f} s: {left} entries left")
            time.sleep(2)
        took = time.monotonic() - started
        if took > 30:  # a drain of a few dozen short jobs takes seconds: say what it waited for
            units = "-u miniq-process.service -u miniq-process.path -u miniq-process.timer -u 'miniq-*.timer'"
            journal = vm.run(f"journalctl -b --no-pager -o short-monotonic {units} | tail -n 80").stdout
            self.log(f"slow drain ({took:.0f} s); the journal:\n{journal}")
        stop_processing(vm)
        failed = vm.run("systemctl list-units --failed --plain --no-legend 'miniq*'").stdout.strip()
        if failed:
            raise Failure(f"failed units after the drain: {failed}")
        return took

    def run(self, cuts: int, budget: float | None = None, at_least: int = 1) -> dict[str, Any]:
        """``cuts`` power cuts, then a drain and the final check; returns the figures.

        With a ``budget`` (seconds), no cut starts once the cuts so far took
        that long and numbered ``at_least``: an emulated guest boots two to
        three times slower on a busy host, and CI's run has a deadline."""
        self.log(f"power cuts: seed {self.seed}, {cuts} cuts, work directory {self.work}")
        if not self.base.exists():
            self.prepare()
        figures: dict[str, Any] = {"seed": self.seed, "cuts": [], "boots": [], "kernel hangs": 0}
        began = time.monotonic()
        try:
            for n in range(cuts):
                took = time.monotonic() - began
                if budget is not None and n >= at_least and took > budget:
                    self.log(f"power cuts: stopping after {n} of {cuts} cuts, which took {took:.0f} s (budget {budget:.0f} s)")
                    break
                vm = self.boot()
                figures["boots"].append(round(vm.boot_seconds, 1))
                figures["kernel hangs"] += len(vm.kernel_hangs)
                if n == 0:
                    self.first_setup(vm)
                self.ledger.read_marks(self.marks)
                state = check_state(self.snapshot(vm), self.ledger, f"after cut {n}" if n else "before the first cut")
                self.start(vm)
                after = self.cut()
                figures["cuts"].append(round(after, 1))
                self.log(f"cut {n + 1}/{cuts} after {after:.1f} s of work; at boot ({vm.boot_seconds:.0f} s): {state}")
            vm = self.boot()
            figures["kernel hangs"] += len(vm.kernel_hangs)
            self.ledger.read_marks(self.marks)
            check_state(self.snapshot(vm), self.ledger, f"after cut {len(figures['cuts'])}")
            figures["drain seconds"] = round(self.drain(vm), 1)
            self.ledger.read_marks(self.marks)
            figures.update(check_end(self.snapshot(vm), self.ledger, PARALLEL))
            figures["enqueued"] = len(self.ledger.enqueued)
            figures["checks"] = len(self.ledger.checks)
            return figures
        finally:
            if self.vm is not None:
                self.vm.close()


QUEUE_MOUNT_UNIT = """[Unit]
Description=test bed: the queue disk, mounted at boot before miniq (no udev in this guest)
DefaultDependencies=no
After=local-fs.target
Before=miniq-process.service miniq-process.path miniq-process.timer

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/mount /dev/vdb /var/lib/miniq

[Install]
WantedBy=sysinit.target
"""


def after_boot(cuts: PowerCuts) -> dict[str, Any]:
    """What a reboot leaves, run by the timer alone, and then an idle queue.

    A root with the queue's units enabled as a package leaves them (and its
    disk mounted at boot), a job running and one delayed when the power goes;
    the next boot starts nothing by hand: miniq-process.timer's run after
    startup must recover the cut run and run the delayed job.  Then the queue
    idles a minute: no processor starts, no journal line of miniq's units."""
    setup = VM(cuts.image, "afterboot-setup", cuts.work, base=cuts.base, extra=cuts.extra())
    setup.boot()
    enabled = cuts.work / "afterboot.qcow2"
    try:
        setup.put("/etc/systemd/system/tb-queue-mount.service", QUEUE_MOUNT_UNIT.encode())
        dropin = b"[Unit]\nRequires=tb-queue-mount.service\nAfter=tb-queue-mount.service\nWants=tb-marks.service\nAfter=tb-marks.service\n"
        setup.put("/etc/systemd/system/miniq-process.service.d/queue-disk.conf", dropin)
        setup.run("systemctl enable tb-queue-mount.service miniq-process.path miniq-process.timer", check=True)
        setup.run("systemctl start tb-queue-mount.service", check=True)
        cuts.first_setup(setup)  # the job types, on the queue disk
    finally:
        setup.shutdown(keep=enabled)
    first = VM(cuts.image, "afterboot-1", cuts.work, base=enabled, extra=cuts.extra())
    first.boot()
    try:
        first.run("systemctl is-active --quiet miniq-process.path", check=True)
        running = first.run("miniq enqueue work 30", check=True).stdout.strip()
        deadline = time.monotonic() + 120
        while not first.run(f"ls {ROOT}/running | grep -q {running}").returncode == 0:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.5)
        delayed = first.run("miniq enqueue --in 2s work 0", check=True).stdout.strip()
        time.sleep(1)
        first.kill()
    finally:
        first.close()
    second = VM(cuts.image, "afterboot-2", cuts.work, base=enabled, extra=cuts.extra())
    second.boot()
    try:
        booted = time.monotonic()
        deadline = booted + 300
        while not {f"{running}.json", f"{delayed}.json"} <= set(second.run(f"ls {ROOT}/done").stdout.split()):
            if time.monotonic() > deadline:
                raise Failure(f"after boot, nothing ran them: {second.run(f'ls -R {ROOT}/running {ROOT}/delayed {ROOT}/queue').stdout}")
            time.sleep(1)
        took = time.monotonic() - booted
        record = json.loads(second.run(f"cat {ROOT}/done/{running}.json", check=True).stdout)
        causes = [(a["outcome"], a.get("cause")) for a in record["attempts"]]
        if causes != [("interrupted", "lost"), ("exited", None)]:
            raise Failure(f"after boot, the cut job's attempts are {causes}")
        # The idle minute starts once the last processor has ended (it lingers after the drain).
        while second.run("systemctl show -P ActiveState miniq-process.service").stdout.strip() != "inactive":  # oneshot: activating
            if time.monotonic() > deadline:
                raise Failure("the processor did not end after the drain")
            time.sleep(1)
        show = "systemctl show --value --property=NRestarts,ExecMainStartTimestampMonotonic miniq-process.service"
        started = second.run(show).stdout.split()
        cursor = second.run("journalctl -n 0 --show-cursor --no-pager").stdout.strip().rsplit("cursor: ", 1)[-1]
        time.sleep(60)
        idle = second.run(f"journalctl --no-pager -o cat --after-cursor '{cursor}' -u miniq-process.service -u miniq-process.timer "
                          "-u miniq-process.path").stdout.strip()  # fmt: skip
        again = second.run(show).stdout.split()
        next_elapse = second.run("systemctl show -P NextElapseUSecMonotonic miniq-process.timer").stdout.strip()
        if idle or again != started or next_elapse not in ("infinity", "0", ""):
            raise Failure(f"an idle minute after the drain: journal {idle!r}, processor {started} -> {again}, timer next {next_elapse}")
        return {"ran both within (s of boot)": round(took, 1), "idle minute journal lines": 0, "timer next elapse": next_elapse}
    finally:
        second.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Power cuts of a guest running miniq (tests/vm/powercut.py).")
    parser.add_argument("--cuts", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "little"))
    parser.add_argument("--deb", type=Path, help="the .deb to test (default: build this checkout's)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/miniq-powercut"))
    parser.add_argument("--write-log", type=float, default=0, metavar="SECONDS",
                        help="also record SECONDS of work with dm-log-writes and check every flush point (dmlog.py)")  # fmt: skip
    args = parser.parse_args()
    if args.deb is None:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(["bash", str(repo / "packaging" / "build-deb.sh")], check=True, capture_output=True, text=True).stdout
        args.deb = Path(out.split("built ", 1)[1].split()[0])
    shutil.rmtree(args.work, ignore_errors=True)
    cuts = PowerCuts(build(), args.deb, args.work, args.seed)
    if args.cuts:
        print(json.dumps(cuts.run(args.cuts), indent=2))
    else:  # the write log alone
        cuts.prepare()
    if args.write_log:
        from .dmlog import WriteLog

        print(json.dumps(WriteLog(cuts).run(args.write_log), indent=2))


if __name__ == "__main__":
    sys.exit(main())
