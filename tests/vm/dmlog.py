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

Disks: vdb the queue's (logged), vdc the log, vdd the replay, vde the
snapshots' copy-on-write store; all raw files of the host.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from .machine import VM, stop_processing
from .powercut import API_CLIENT, ROOT, SNAPSHOT, Failure, Ledger, PowerCuts, check_state

#: Runs in the guest: replays the log onto the replay disk, and at each flush
#: point prints a snapshot of the mounted copy, one JSON line each.
REPLAY = r"""
import json, os, struct, subprocess, sys
SUPER, ENTRY = struct.Struct("<QQQI"), struct.Struct("<QQQQ")
FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
MAGIC = 0x6a736677736872
log, target, cow = "/dev/vdc", "/dev/vdd", "/dev/vde"
snapshot_code = open("/usr/local/lib/tb-snapshot-fn.py").read()
namespace = {}
exec(snapshot_code, namespace)
size = subprocess.run(["blockdev", "--getsz", target], capture_output=True, text=True, check=True).stdout.strip()
fd, out = os.open(log, os.O_RDONLY), os.open(target, os.O_WRONLY)
magic, version, count, sectorsize = SUPER.unpack(os.pread(fd, SUPER.size, 0))
assert magic == MAGIC, hex(magic)
pos, marks, points, started = sectorsize, [], 0, False
os.makedirs("/mnt/replay", exist_ok=True)
def check(index):
    os.fsync(out)
    subprocess.run(["dmsetup", "create", "tbsnap", "--table", f"0 {size} snapshot {target} {cow} N 8"], check=True)
    subprocess.run(["dmsetup", "mknodes", "tbsnap"], check=True)  # no udev in this guest
    try:
        subprocess.run(["mount", "-t", "ext4", "/dev/mapper/tbsnap", "/mnt/replay"], check=True, capture_output=True)
        try:
            state = namespace["snapshot"]("/mnt/replay")
        finally:
            subprocess.run(["umount", "/mnt/replay"], check=True)
    finally:
        subprocess.run(["dmsetup", "remove", "tbsnap"], check=True)
    print(json.dumps({"point": index, "enqueued": list(marks), "state": state}), flush=True)
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
    case $k in
        0|1|2|3|4) id=$(miniq enqueue work $secs) ;;
        5|6) id=$(miniq enqueue --in 1s work 0) ;;
        7|8) id=$(miniq enqueue --retries 2 flaky) ;;
        *) if [ -n "$prev" ]; then id=$(miniq enqueue --after "$prev" work 0); else id=$(miniq enqueue work 0); fi ;;
    esac || continue
    [ -n "$id" ] && dmsetup message tblog 0 mark "enq:$id" && prev=$id
done
"""
)

#: powercut.py's library client, marking the log instead of the host's file.
API_MARKING_CLIENT = API_CLIENT.replace(
    "def mark(line):",
    "def mark(line):\n    import subprocess\n"
    "    subprocess.run(['dmsetup', 'message', 'tblog', '0', 'mark', 'enq:' + line.split()[1]], check=True)\n"
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

    def extra(self) -> list[str]:
        sizes = {"data": "256M", "log": "2G", "replay": "256M", "cow": "256M"}
        args = []
        for name in ("data", "log", "replay", "cow"):
            subprocess.run(["truncate", "-s", sizes[name], str(self.disks[name])], check=True)
            args += ["-drive", f"file={self.disks[name]},if=virtio,format=raw,cache=writeback"]
        marks = ["-chardev", f"file,id=marks,path={self.cuts.marks},append=on", "-device", "virtserialport,chardev=marks,name=tb.marks"]
        return [*args, *marks]

    def run(self, seconds: float = 15.0) -> dict[str, Any]:
        """Record ``seconds`` of work, replay, check every flush point."""
        vm = VM(self.cuts.image, "dmlog", self.cuts.work, base=self.cuts.base, extra=self.extra())
        vm.boot()
        try:
            return self._run(vm, seconds)
        finally:
            vm.close()
            for disk in self.disks.values():
                disk.unlink(missing_ok=True)

    def _run(self, vm: VM, seconds: float) -> dict[str, Any]:
        vm.put("/usr/local/lib/tb-snapshot-fn.py", ("import json, os, sys\n" + SNAPSHOT_FN + "\n").encode())
        vm.put("/usr/local/lib/tb-replay.py", REPLAY.encode())
        vm.put("/usr/local/bin/tb-marking-client", MARKING_CLIENT.encode(), "0755")
        vm.put("/usr/local/lib/tb-api-marking-client.py", API_MARKING_CLIENT.encode())
        vm.run(
            "modprobe dm-log-writes && modprobe dm-snapshot && "
            'dmsetup create tblog --table "0 $(blockdev --getsz /dev/vdb) log-writes /dev/vdb /dev/vdc" && '
            "dmsetup mknodes tblog && "  # no udev in this guest: dmsetup makes the node
            "mkfs.ext4 -q -F /dev/mapper/tblog && dmsetup message tblog 0 mark mkfs && "
            f"mount /dev/mapper/tblog {ROOT} && mkdir -p {ROOT}/jobs && "
            f"printf '[processor]\\nparallel = 2\\nlease = 5s\\n' > {ROOT}/miniq.conf",
            check=True,
        )  # fmt: skip
        from .powercut import FLAKY, WORK

        vm.put(f"{ROOT}/jobs/work.job", WORK.encode(), "0755")
        vm.put(f"{ROOT}/jobs/flaky.job", FLAKY.encode(), "0755")
        vm.run("systemctl start miniq-process.path miniq-process.timer", check=True)
        for n, command in enumerate(("/usr/local/bin/tb-marking-client", "/usr/bin/python3 /usr/local/lib/tb-api-marking-client.py")):
            vm.run(f"systemd-run --quiet --unit tb-marking-{n} {command} {self.cuts.rng.randrange(1, 32767)}", check=True)
        time.sleep(seconds)
        stop_processing(vm, "tb-marking-0", "tb-marking-1")
        vm.run(f"umount {ROOT} && dmsetup remove tblog", check=True, timeout=300)
        started = time.monotonic()
        out = vm.run("python3 /usr/local/lib/tb-replay.py", check=True, timeout=3000).stdout.splitlines()
        replay_seconds = time.monotonic() - started
        ledger = Ledger()
        checked = 0
        for line in out[:-1]:
            point = json.loads(line)
            ledger.enqueued = set(point["enqueued"])
            try:
                check_state(point["state"], ledger, f"flush point {point['point']}")
            except Failure as e:
                raise Failure(f"{e} (replay of the write log, seed {self.cuts.seed})") from None
            checked += 1
        summary: dict[str, Any] = json.loads(out[-1])
        assert summary["points"] == checked
        summary.update(replay_seconds=round(replay_seconds, 1), jobs=len(ledger.enqueued), records=len(ledger.records))
        return summary
