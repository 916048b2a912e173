"""Two machines sharing one root over real NFS (two guests, one virtual wire).

Guest "b" exports /srv/share (kernel NFS server) and mounts it itself; guest
"a" mounts it over the network.  Each runs miniq's units for the shared root
(the Debian package, `install-units --timer-period 10s`), leases are 10 s.
Guest a's clock runs 10 minutes ahead of b's: lease expiry must be judged by
the file server's clock, or a would take b's live claims.  Each guest has its
own NFSv4 client identity (nfs.nfs4_unique_id), as cloned machines need.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import boot, install_miniq
from .image import Image
from .machine import VM, stop_processing

# Under emulation two guests boot in 1-2 min each and run about 2 jobs a second
# between them: the module's setup (counted in its first test) and its jobs
# take longer than the suite's default timeout.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1800)]

ROOT = "/srv/queue/root"
#: Jobs per exactly-once round, half enqueued on each machine: two emulated guests
#: run about 2 a second between them, and CI has an hour for everything.
JOBS = 100
LOG = "/srv/queue/log"
MARK = '#!/bin/sh\n: > "/srv/queue/log/$MINIQ_JOB_ID.$(hostname).$MINIQ_ATTEMPT"\n'
LONG = '#!/bin/sh\n: > "/srv/queue/log/$MINIQ_JOB_ID.$(hostname).$MINIQ_ATTEMPT"\nif [ "$MINIQ_ATTEMPT" = 1 ]; then exec sleep 600; fi\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def network(vm: VM, address: str) -> None:
    vm.run(f"dev=$(ls /sys/class/net | grep -v '^lo$' | head -n 1) && ip addr add {address}/24 dev $dev && ip link set $dev up", check=True)


@pytest.fixture(scope="module")
def pair(image: Image, deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, VM]]:
    work = tmp_path_factory.mktemp("nfs")
    port = free_port()
    ahead = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 600))
    vms: dict[str, VM] = {}
    try:
        # Both boot at once (a minute or more each under emulation); b listens on
        # the wire, so a starts once b's qemu is up (its monitor socket exists).
        with ThreadPoolExecutor(2) as pool:
            booting = {"b": pool.submit(boot, image, work, "b", cpus=1, net=f"listen=127.0.0.1:{port}", mac="52:54:00:00:00:02",
                                        cmdline="nfs.nfs4_unique_id=guest-b")}  # fmt: skip
            deadline = time.monotonic() + 60
            while not (work / "b.monitor").exists() and not booting["b"].done() and time.monotonic() < deadline:
                time.sleep(0.2)
            booting["a"] = pool.submit(boot, image, work, "a", cpus=1, net=f"connect=127.0.0.1:{port}", mac="52:54:00:00:00:01",
                                       rtc=ahead, cmdline="nfs.nfs4_unique_id=guest-a")  # fmt: skip
            for name, future in booting.items():
                if future.exception() is None:
                    vms[name] = future.result()
            for future in booting.values():
                future.result()  # raises the first failure, after both are known
        a, b = vms["a"], vms["b"]
        network(b, "10.9.0.2")
        network(a, "10.9.0.1")
        b.run("systemctl unmask nfs-server.service && systemctl start nfs-server.service && exportfs -ra", check=True, timeout=300)

        def client(name: str) -> None:
            vm = vms[name]
            vm.run(f"hostnamectl set-hostname client-{name}", check=True)
            vm.run("mkdir -p /srv/queue && mount -t nfs4 -o vers=4.2 10.9.0.2:/srv/share /srv/queue", check=True, timeout=300)
            install_miniq(vm, deb)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(client, ["a", "b"]))
        b.run(f"mkdir -p {ROOT}/jobs {LOG} && printf '[processor]\\nlease = 10s\\n' > {ROOT}/miniq.conf", check=True)
        for job, body in (("mark", MARK), ("long", LONG)):
            b.put(f"{ROOT}/jobs/{job}.job", body.encode(), "0755")
        for vm in vms.values():
            vm.run(f"MINIQ_ROOT={ROOT} miniq --system install-units --now --timer-period 10s", check=True)
        skew = float(a.run("date +%s", check=True).stdout) - float(b.run("date +%s", check=True).stdout)
        print(f"\nguest a's clock is {skew:.0f} s ahead of guest b's (the file server's)")
        assert skew > 500
        yield vms
    finally:
        for vm in vms.values():
            vm.close()


def enqueue_many(vm: VM, count: int) -> list[str]:
    script = (
        f"from pathlib import Path\nfrom miniq import Queue\nq = Queue(Path('{ROOT}'))\n"
        f"for i in range({count}): print(q.enqueue('mark', [str(i)]).id)\n"
    )
    return vm.run("python3 -", input=script.encode(), check=True, timeout=600).stdout.split()


def wait_done(vm: VM, ids: list[str], timeout: float) -> float:
    start = time.monotonic()
    wanted = set(ids)
    while True:
        listing = vm.run(f"ls {ROOT}/done {ROOT}/failed 2>/dev/null", check=True).stdout.split()
        finished = {name[:-5] for name in listing if name.endswith(".json")}
        if wanted <= finished:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            state = vm.run(f"ls {ROOT}/queue | wc -l; ls {ROOT}/running; journalctl -u miniq-process --no-pager -n 30", check=False).stdout
            raise AssertionError(f"{len(wanted - finished)} job(s) not finished after {timeout} s; queued, running, journal:\n{state}")
        time.sleep(2)


def runs(vm: VM) -> Counter[str]:
    names = vm.run(f"ls {LOG}", check=True).stdout.split()
    return Counter(name.split(".")[0] for name in names)


def exactly_once(pair: dict[str, VM]) -> None:
    ids = enqueue_many(pair["a"], JOBS // 2) + enqueue_many(pair["b"], JOBS // 2)
    took = wait_done(pair["b"], ids, timeout=1200)
    counted = runs(pair["b"])
    hosts = Counter(name.split(".")[1] for name in pair["b"].run(f"ls {LOG}", check=True).stdout.split() if name.split(".")[0] in set(ids))
    print(f"{JOBS} jobs over NFS finished {took:.0f} s after the last enqueue; runs per host: {dict(hosts)}")
    assert [i for i in ids if counted[i] != 1] == [], "a job ran twice, or not at all"
    failed = pair["b"].run(f"ls {ROOT}/failed", check=True).stdout.split()
    assert not set(failed) & {f"{i}.json" for i in ids}


def test_exactly_once_over_nfs_with_distinct_hostnames(pair: dict[str, VM]) -> None:
    exactly_once(pair)


def test_a_job_enqueued_on_one_machine_is_run_by_the_other_within_the_timer_period(pair: dict[str, VM]) -> None:
    a, b = pair["a"], pair["b"]
    stop_processing(a)
    try:
        start = time.monotonic()
        job_id = a.run(f"miniq --root {ROOT} enqueue mark", check=True).stdout.strip()
        took = wait_done(b, [job_id], timeout=120)
        print(f"enqueued on a while only b's units run: done {took:.1f} s later (timer period 10 s)")
        assert time.monotonic() - start <= 10 + 15  # the period, plus the emulator's slowness
        assert f"{job_id}.client-b.1" in b.run(f"ls {LOG}", check=True).stdout.split()
    finally:
        a.run("systemctl start miniq-process.path miniq-process.timer", check=True)


def test_exactly_once_over_nfs_with_the_same_hostname(pair: dict[str, VM]) -> None:
    for vm in pair.values():
        vm.run("hostnamectl set-hostname clone", check=True)
    exactly_once(pair)


STAGE_WRITER = """
import errno, os, sys, time
from pathlib import Path
from miniq.core import files
from miniq.store.layout import Layout

layout = Layout(Path(sys.argv[1]))
probe = Path(sys.argv[1]) / "probe-staging"
probe.mkdir(exist_ok=True)
end = time.monotonic() + float(sys.argv[2])
written = lost = 0
while time.monotonic() < end:
    try:
        files.write_durably(layout.tmp, probe / str(written), b"x" * 200)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ESTALE):
            raise
        lost += 1
    written += 1
for f in probe.iterdir():
    f.unlink()
probe.rmdir()
print(written, lost)
"""

TMP_CLEANER = """
import os, sys, time
from pathlib import Path
from miniq.store import claims
from miniq.store.claims import clean_tmp
from miniq.core.proc import Claimer
from miniq.store.layout import Layout

removed = []
unlink = os.unlink
def logged_unlink(path, *args, **kwargs):
    st = os.lstat(path)
    removed.append(f"{os.path.basename(path)} mtime {st.st_mtime:.0f} ctime {st.st_ctime:.0f}")
    unlink(path, *args, **kwargs)
claims.os.unlink = logged_unlink
layout, me = Layout(Path(sys.argv[1])), Claimer.current()
end = time.monotonic() + float(sys.argv[2])
passes = 0
while time.monotonic() < end:
    clean_tmp(layout, me)
    passes += 1
print(passes, len(removed))
print("\\n".join(removed[:10]))
"""


def test_a_live_writers_staging_files_survive_the_other_machines_cleaning(pair: dict[str, VM]) -> None:
    """A processor removes staging files in tmp/ that are over an hour old.  NFSv4
    creates a file with O_EXCL as an exclusive create: until the client's SETATTR that
    follows in the same open(2), the server keeps the create verifier in the file's
    mtime, and the Linux client's verifier is its jiffies.  Five minutes after boot
    jiffies wraps to small numbers, so that mtime reads as 1970.  Another machine's
    processor that looked in that moment took a live writer's file for an old one,
    and an enqueue failed with ENOENT (a CI rehearsal, 37 jobs into 50)."""
    a, b = pair["a"], pair["b"]
    # The verifier reads as 1970 only once a's 32-bit jiffies has wrapped (300 s after boot).
    deadline = time.monotonic() + 600
    while float(a.run("cut -d' ' -f1 /proc/uptime", check=True).stdout) < 330:
        assert time.monotonic() < deadline
        time.sleep(10)
    seconds = 60
    with ThreadPoolExecutor(2) as pool:
        writing = pool.submit(a.run, f"python3 - {ROOT} {seconds}", input=STAGE_WRITER.encode(), check=True, timeout=600)
        cleaning = pool.submit(b.run, f"python3 - {ROOT} {seconds}", input=TMP_CLEANER.encode(), check=True, timeout=600)
        written, lost = map(int, writing.result().stdout.split())
        report = cleaning.result().stdout.splitlines()
    passes, removed = map(int, report[0].split())
    print(f"a staged {written} files in {seconds} s while b cleaned tmp/ {passes} times; a lost {lost}; b removed {removed}:")
    print("\n".join(report[1:]))
    assert written > 100 and passes > 100  # both really ran, side by side
    assert lost == 0
    assert removed == 0


UNIQUE_RACE = """
import sys, time
from pathlib import Path
from miniq.store import unique
from miniq.core.job import new_id
from miniq.store.layout import Layout

layout, key = Layout(Path(sys.argv[1])), "mark:in-flight"
publishing = new_id()  # an enqueue that holds the key and is about to publish its job
unique.take(layout, key, 0, publishing)
start = time.monotonic()
try:
    unique.take(layout, key, 0, new_id())
    print("taken", time.monotonic() - start)
except unique.AlreadyQueued as e:
    print("held", time.monotonic() - start, e.job_id == publishing)
time.sleep(unique.GRACE + 1)
last = new_id()
unique.take(layout, key, 0, last)  # the grace is over: a job never published frees its key
unique.release(layout, unique.key_path(layout, key, 0), last)
"""


def test_a_unique_key_being_published_holds_on_a_machine_whose_clock_runs_ahead(pair: dict[str, VM]) -> None:
    """A key whose job is not yet visible anywhere is someone's enqueue between taking the
    key and publishing the job, for GRACE seconds of the file server's clock.  Guest a runs
    10 minutes ahead: by its own clock every key is 600 s old, and it took the key."""
    out = pair["a"].run(f"python3 - {ROOT}", input=UNIQUE_RACE.encode(), check=True).stdout.split()
    print(f"guest a, 600 s ahead, asked for a key in flight: {out}")
    assert out[0] == "held" and out[2] == "True"
    assert float(out[1]) < 10  # asked within the grace (10 s), so "held" is the only right answer


def test_a_machine_that_loses_power_has_its_job_taken_over(pair: dict[str, VM]) -> None:
    a, b = pair["a"], pair["b"]
    stop_processing(b)
    job_id = a.run(f"miniq --root {ROOT} enqueue long", check=True).stdout.strip()
    deadline = time.monotonic() + 120
    while f"{job_id}." not in a.run(f"ls {LOG}", check=True).stdout:
        assert time.monotonic() < deadline, "the job did not start on a"
        time.sleep(1)
    host = a.run("hostname", check=True).stdout.strip()
    # What the file server holds for a when it dies (delegations, opens, locks): a dead
    # client's state holds back conflicting changes until the server's NFSv4 lease (90 s)
    # ends.  a read its claim, which may give it a read delegation; miniq writes the claim
    # afresh after reading it, so a holds none on it.
    states = b.run("for c in /proc/fs/nfsd/clients/*; do if grep -q guest-a $c/info; then cat $c/states; fi; done", check=True).stdout
    print(f"NFS server state of a:\n{states}")
    assert "running/" not in states
    a.kill()
    cut = time.monotonic()
    b.run("systemctl start miniq-process.path miniq-process.timer", check=True)
    took = wait_done(b, [job_id], timeout=300)
    print(f"power cut of a: its job finished on b {time.monotonic() - cut:.0f} s later (lease 10 s, timer 10 s)")
    print(b.run("journalctl -o short-precise -u miniq-process --since -6min --no-pager | tail -n 30", check=False).stdout)
    data = json.loads(b.run(f"miniq --root {ROOT} show --json {job_id}", check=True).stdout)
    assert [x["outcome"] for x in data["attempts"]] == ["interrupted", "exited"], data["attempts"]
    assert data["attempts"][0]["lost_host"] == host
    assert took <= 10 + 10 + 20  # lease, timer period, the emulator's slowness
