"""Every write and flush of a busy queue recorded, and the disk rebuilt at each flush point.

A disk with a volatile cache may lose, or write in another order, whatever
it acknowledged but was not told to flush; only flushes (and FUA writes)
promise anything.  So the state a power cut may leave is at least the state
at the last completed flush.  The guest's kernel records every write, flush
and FUA of the queue's disk with device-mapper's ``log-writes`` target (as
file system developers test file systems, xfstests' replay-log); after the
run, the log is replayed onto an empty disk, and at every flush point a
throw-away snapshot of the replayed disk is mounted (ext4 replays its
journal into the snapshot) and checked with powercut.py's invariants: no
empty or partial file, every job whose enqueue returned (the client marks
the log with its id once ``enqueue`` returned) in exactly one state, no
record ever changed or lost from one flush point to the next.

Then the replay is what a power cut would leave, so miniq must recover from
it: at a sample of flush points (``SAMPLES``: a third, two thirds, the last)
the replay keeps a copy of the disk, and a fresh guest boots on each copy,
recovers, drains the queue and meets powercut.py's ``check_end``: every job
acknowledged by that point done as its kind calls for, runs matching
attempts, interrupted runs explained by the one cut.  Jobs mark their runs
into the write log too (``run:ID:ATTEMPT:BOOT``), so a sample knows which
runs happened before its point; in a sample's guest, where there is no log,
they mark through the relay into a marks file of their own, never the
power-cut test's.

Disks: vdb the queue's (logged), vdc the log, vdd the replay, vde the
snapshots' copy-on-write store, vdf and on the sampled copies; all raw files of the host.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from .machine import VM, stop_processing
from .powercut import API_CLIENT, MARK, PARALLEL, ROOT, SNAPSHOT, Failure, Ledger, PowerCuts, Run, check_end, check_state

#: Flush points (as fractions of all) whose disk a fresh guest recovers and drains.
SAMPLES = (1 / 3, 2 / 3, 1.0)

#: A run's mark: into the write log while one is recorded, else (a sample's guest) through the relay.
RUN_MARK = (
    "if dmsetup status tblog >/dev/null 2>&1; then\n"
    '    dmsetup message tblog 0 mark "run:$MINIQ_JOB_ID:$MINIQ_ATTEMPT:$(cat /proc/sys/kernel/random/boot_id):$(date +%s.%N)"\n'
    "else\n"
    '    mark "RUN $MINIQ_JOB_ID $MINIQ_ATTEMPT $(cat /proc/sys/kernel/random/boot_id) $(date +%s.%N)"\n'
    "fi\n"
)
WORK = "#!/bin/bash\n" + MARK + RUN_MARK + 'sleep "${1:-0}"\n'
FLAKY = "#!/bin/bash\n" + MARK + RUN_MARK + '[ "$MINIQ_ATTEMPT" = 1 ] && exit 1\nexit 0\n'

#: Runs in the guest: replays the log onto the replay disk, and at each flush
#: point prints a snapshot of the mounted copy, one JSON line each.
REPLAY = r"""
import json, os, struct, subprocess, sys
SUPER, ENTRY = struct.Struct("<QQQI"), struct.Struct("<QQQQ")
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
MAGIC = 0x6a736677736872
log, target, cow = "/dev/vdc", "/dev/vdd", "/dev/vde"
copies = sys.argv[1:]  # disks for the sampled points, in order
snapshot_code = open("/usr/local/lib/tb-snapshot-fn.py").read()
namespace = {}
exec(snapshot_code, namespace)
size = subprocess.run(["blockdev", "--getsz", target], capture_output=True, text=True, check=True).stdout.strip()
fd, out = os.open(log, os.O_RDONLY), os.open(target, os.O_WRONLY)
magic, version, count, sectorsize = SUPER.unpack(os.pread(fd, SUPER.size, 0))
assert magic == MAGIC, hex(magic)
# A first pass over the entries' headers: which flush points there are, to
# sample among those after the "ready" mark (the job types flushed: a job
# type written without its own fsync may be empty at an earlier point).
flushes, pos, ready = [], sectorsize, False
for index in range(count):
    sector, nsec, flags, datalen = ENTRY.unpack_from(os.pread(fd, sectorsize, pos))
    pos += sectorsize
    if flags & MARK:
        ready = ready or os.pread(fd, sectorsize, pos - sectorsize)[ENTRY.size:ENTRY.size + datalen] == b"ready"
        continue
    if nsec and not flags & DISCARD:
        pos += nsec * sectorsize
    if ready and flags & (FLUSH | FUA):
        flushes.append(index)
fractions = [float(f) for f in os.environ.get("TB_SAMPLES", "").split(",") if f]
sampled = {flushes[min(int(f * len(flushes)), len(flushes) - 1)]: disk for f, disk in zip(fractions, copies)} if flushes else {}
pos, marks, runs, points, started, stopped = sectorsize, [], [], 0, False, False
os.makedirs("/mnt/replay", exist_ok=True)
def check(index):
    os.fsync(out)
    subprocess.run(["dmsetup", "create", "tbsnap", "--table", f"0 {size} snapshot {target} {cow} N 8"], check=True)
    subprocess.run(["dmsetup", "mknodes", "tbsnap"], check=True)  # no udev in this guest
    if index in sampled:  # the disk as this flush point left it, for a guest of its own to recover
        subprocess.run(["dd", "if=/dev/mapper/tbsnap", f"of={sampled[index]}", "bs=4M", "conv=fsync", "status=none"], check=True)
    try:
        subprocess.run(["mount", "-t", "ext4", "/dev/mapper/tbsnap", "/mnt/replay"], check=True, capture_output=True)
        try:
            state = namespace["snapshot"]("/mnt/replay")
        finally:
            subprocess.run(["umount", "/mnt/replay"], check=True)
    finally:
        subprocess.run(["dmsetup", "remove", "tbsnap"], check=True)
    print(json.dumps({"point": index, "enqueued": list(marks), "runs": list(runs), "state": state,
                      "sample": sampled.get(index), "stopped": stopped}), flush=True)
for index in range(count):
    block = os.pread(fd, sectorsize, pos)
    pos += sectorsize
    sector, nsec, flags, datalen = ENTRY.unpack_from(block)
    if flags & MARK:
        text = block[ENTRY.size:ENTRY.size + datalen].decode()
        if text == "mkfs":
            started = True
        elif text.startswith("enq:"):
            marks.append(text[4:])
        elif text.startswith("run:"):
            runs.append(text[4:])
        elif text == "stop":
            stopped = True
        continue
    if nsec and not flags & DISCARD:
        os.pwrite(out, os.pread(fd, nsec * sectorsize, pos), sector * sectorsize)
        pos += nsec * sectorsize
    if started and flags & (FLUSH | FUA):
        check(index)
        points += 1
print(json.dumps({"entries": count, "points": points, "sectorsize": sectorsize}))
"""

MARKING_CLIENT = (
    "#!/bin/bash\n"
    + """RANDOM=$1
prev=
while true; do
    k=$((RANDOM % 10)); secs=$((RANDOM % 2))
    kind=work
    case $k in
        0|1|2|3|4) id=$(miniq enqueue work $secs) ;;
        5|6) id=$(miniq enqueue --in 1s work 0); kind=delayed ;;
        7|8) id=$(miniq enqueue --retries 2 flaky); kind=flaky ;;
        *) if [ -n "$prev" ]; then id=$(miniq enqueue --after "$prev" work 0); kind="after:$prev"; else id=$(miniq enqueue work 0); fi ;;
    esac || continue
    [ -n "$id" ] && dmsetup message tblog 0 mark "enq:$id:$kind" && prev=$id
done
"""
)

#: powercut.py's library client, marking the log instead of the host's file.
API_MARKING_CLIENT = API_CLIENT.replace(
    "def mark(line):",
    "def mark(line):\n    import subprocess\n"
    "    subprocess.run(['dmsetup', 'message', 'tblog', '0', 'mark', 'enq:' + ':'.join(line.split()[1:])], check=True)\n"
    "    return\n\ndef _unused(line):",
)

#: The snapshot reader of powercut.py as a function, for the replay to call per point.
SNAPSHOT_FN = "def snapshot(root):\n" + "\n".join(
    "    " + line
    for line in SNAPSHOT.replace("root = sys.argv[1]\n", "").replace("print(json.dumps(out))", "return out").strip().splitlines()
)


class WriteLog:
    """One recorded run of a busy queue and its replay (see the module comment)."""

    def __init__(self, cuts: PowerCuts, log: Any = print) -> None:
        self.cuts, self.log = cuts, log
        self.disks = {name: cuts.work / f"dmlog-{name}.img" for name in ("data", "log", "replay", "cow")}
        self.copies = [cuts.work / f"dmlog-sample{n}.img" for n in range(len(SAMPLES))]
        self.marks = cuts.work / "dmlog-marks.log"  # the samples' runs: never the power-cut test's file
        self.recorded_boot = ""  # the boot of the recorded run: cut at every flush point

    def extra(self) -> list[str]:
        sizes = {"data": "256M", "log": "2G", "replay": "256M", "cow": "256M"}
        args = []
        for name in ("data", "log", "replay", "cow"):
            subprocess.run(["truncate", "-s", sizes[name], str(self.disks[name])], check=True)
            args += ["-drive", f"file={self.disks[name]},if=virtio,format=raw,cache=writeback"]
        for copy in self.copies:
            subprocess.run(["truncate", "-s", sizes["data"], str(copy)], check=True)
            args += ["-drive", f"file={copy},if=virtio,format=raw,cache=writeback"]
        self.marks.touch()
        marks = ["-chardev", f"file,id=marks,path={self.marks},append=on", "-device", "virtserialport,chardev=marks,name=tb.marks"]
        return [*args, *marks]

    def run(self, seconds: float = 15.0) -> dict[str, Any]:
        """Record ``seconds`` of work, replay, check every flush point, recover from a sample."""
        vm = VM(self.cuts.image, "dmlog", self.cuts.work, base=self.cuts.base, extra=self.extra())
        vm.boot()
        try:
            summary, samples = self._run(vm, seconds)
        finally:
            vm.close()
            for disk in self.disks.values():
                disk.unlink(missing_ok=True)
        try:
            recovered = [self.recover(n, point) for n, point in enumerate(samples)]
        finally:
            for copy in self.copies:
                copy.unlink(missing_ok=True)
        summary["recovered"] = recovered
        return summary

    def _run(self, vm: VM, seconds: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        vm.put("/usr/local/lib/tb-snapshot-fn.py", ("import json, os, sys\n" + SNAPSHOT_FN + "\n").encode())
        vm.put("/usr/local/lib/tb-replay.py", REPLAY.encode())
        vm.put("/usr/local/bin/tb-marking-client", MARKING_CLIENT.encode(), "0755")
        vm.put("/usr/local/lib/tb-api-marking-client.py", API_MARKING_CLIENT.encode())
        vm.run(
            "modprobe dm-log-writes && modprobe dm-snapshot && "
            'dmsetup create tblog --table "0 $(blockdev --getsz /dev/vdb) log-writes /dev/vdb /dev/vdc" && '
            "dmsetup mknodes tblog && "  # no udev in this guest: dmsetup makes the node
            "mkfs.ext4 -q -F /dev/mapper/tblog && dmsetup message tblog 0 mark mkfs && "
            f"mount /dev/mapper/tblog {ROOT} && mkdir -p {ROOT}/jobs",  # miniq.conf: /etc/miniq's (PowerCuts.prepare)
            check=True,
        )  # fmt: skip
        vm.put(f"{ROOT}/jobs/work.job", WORK.encode(), "0755")
        vm.put(f"{ROOT}/jobs/flaky.job", FLAKY.encode(), "0755")
        vm.run("sync && dmsetup message tblog 0 mark ready", check=True)  # the job types on disk: what samples start from
        self.recorded_boot = vm.run("cat /proc/sys/kernel/random/boot_id", check=True).stdout.strip()
        vm.run("systemctl start miniq-process.path miniq-process.timer", check=True)
        for n, command in enumerate(("/usr/local/bin/tb-marking-client", "/usr/bin/python3 /usr/local/lib/tb-api-marking-client.py")):
            vm.run(f"systemd-run --quiet --unit tb-marking-{n} {command} {self.cuts.rng.randrange(1, 32767)}", check=True)
        time.sleep(seconds)
        # A mark before the orderly stop: a flush point after it may hold runs the stop interrupted.
        vm.run("systemctl stop tb-marking-0 tb-marking-1 && dmsetup message tblog 0 mark stop", check=True)
        stop_processing(vm)
        vm.run(f"umount {ROOT} && dmsetup remove tblog", check=True, timeout=300)
        started = time.monotonic()
        disks = " ".join(f"/dev/vd{chr(ord('f') + n)}" for n in range(len(self.copies)))
        fractions = ",".join(f"{f:.4f}" for f in SAMPLES)
        out = vm.run(f"TB_SAMPLES={fractions} python3 /usr/local/lib/tb-replay.py {disks}", check=True, timeout=3000).stdout.splitlines()
        replay_seconds = time.monotonic() - started
        ledger = Ledger()
        checked = 0
        samples = []
        for line in out[:-1]:
            point = json.loads(line)
            _take_marks(ledger, point)
            try:
                check_state(point["state"], ledger, f"flush point {point['point']}")
            except Failure as e:
                raise Failure(f"{e} (replay of the write log, seed {self.cuts.seed})") from None
            checked += 1
            if point.get("sample"):
                samples.append(point)
        summary: dict[str, Any] = json.loads(out[-1])
        assert summary["points"] == checked
        assert len(samples) == len(SAMPLES), f"{len(samples)} flush points sampled of {len(SAMPLES)}"
        summary.update(replay_seconds=round(replay_seconds, 1), jobs=len(ledger.enqueued), records=len(ledger.records))
        return summary, samples

    def recover(self, n: int, point: dict[str, Any]) -> dict[str, Any]:
        """A fresh guest boots on the disk as flush point ``point`` left it,
        recovers and drains the queue; then ``check_end``, the cut being that point."""
        copy = self.copies[n]
        extra = ["-drive", f"file={copy},if=virtio,format=raw,cache=writeback", "-chardev", f"file,id=marks,path={self.marks},append=on",
                 "-device", "virtserialport,chardev=marks,name=tb.marks"]  # fmt: skip
        vm = VM(self.cuts.image, f"sample{n}", self.cuts.work, base=self.cuts.base, extra=extra)
        vm.boot()
        try:
            vm.run(f"mount /dev/vdb {ROOT}", check=True, timeout=300)  # ext4 replays its journal, as a boot would
            boot = vm.run("cat /proc/sys/kernel/random/boot_id", check=True).stdout.strip()
            ledger = Ledger()
            _take_marks(ledger, point)
            label = f"flush point {point['point']} (sample {n + 1} of {len(SAMPLES)}, seed {self.cuts.seed})"
            snapshot = json.loads(vm.run(f"python3 /usr/local/lib/tb-snapshot.py {ROOT}", check=True, timeout=300).stdout)
            check_state(snapshot, ledger, f"{label}, at boot")
            at_boot = {e["id"]: e["state"] for e in snapshot["entries"]}
            drained = PowerCuts.drain(self.cuts, vm)
            before = self.marks.read_text(errors="replace").splitlines()
            for line in before:  # this guest's runs: their boot tells them from the other samples'
                parts = line.split()
                if len(parts) == 5 and parts[0] == "RUN" and parts[3] == boot:
                    ledger.take(line)
            # The recorded run's boot was cut at this point; this guest's boot drained.
            ledger.boots = [self.recorded_boot, boot]
            ledger.stopped = {self.recorded_boot} if point.get("stopped") else set()
            snapshot = json.loads(vm.run(f"python3 /usr/local/lib/tb-snapshot.py {ROOT}", check=True, timeout=300).stdout)
            try:
                counts = check_end(snapshot, ledger, PARALLEL)
            except Failure as e:
                seen = sum(len(r) for r in ledger.runs.values())
                journal = vm.run("journalctl -u miniq-process -u tb-marks --no-pager -n 60").stdout[-4000:]
                raise Failure(f"{label}: {e} ({len(point.get('runs', []))} runs marked in the log by then, {seen} known in all, "
                              f"{len(before)} lines in {self.marks.name}; at boot: {at_boot}; runs: {point.get('runs')}; "
                              f"journal: {journal})") from None  # fmt: skip
            counts.update(point=point["point"], acknowledged=len(ledger.enqueued), drain_seconds=round(drained, 1))
            self.log(f"write log: recovered and drained from {label}: {counts}")
            return counts
        finally:
            vm.close()


def _take_marks(ledger: Ledger, point: dict[str, Any]) -> None:
    """The enqueues and runs the write log marked up to ``point``."""
    ledger.enqueued, ledger.kinds, ledger.runs = set(), {}, {}
    for mark in point["enqueued"]:
        job_id, _, kind = mark.partition(":")
        ledger.enqueued.add(job_id)
        ledger.kinds[job_id] = kind or "work"
    for mark in point.get("runs", []):
        job_id, attempt, boot, at = mark.split(":")
        ledger.runs.setdefault(job_id, []).append(Run(int(attempt), boot, float(at)))
