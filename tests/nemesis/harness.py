"""A seeded nemesis against three machines sharing one queue, and what must hold after it.

    sudo .venv/bin/python -m tests.nemesis [--seconds N] [--seed S]   # as long as asked; prints the seed

Machines are systemd sandboxes (tests/testbed) sharing one root on a small
tmpfs of the host, like machines sharing a file server: m1 and m3 have the
same host name, m2 runs two jobs at once; lease 4 s, timer period 5 s.
Clients on the host (three threads calling the ``miniq`` command line, as
another machine would) enqueue jobs with priorities, delays, retries and
dependencies, cancel some, and ``wait`` for some.  Each run of a job appends
``RUN id attempt host time`` to a log outside the queue's file system.

The nemesis, every 2-6 s (seeded), does one of: kill -9 a processor or one
of its worker processes; SIGSTOP a processor past its lease, then SIGCONT;
cut a machine's power (its whole PID namespace killed) and boot it again;
fill the file system, then free it.  A clock step of one machine cannot be
done here: sandboxes share the host's kernel clock (the VM test bed has
per-guest clocks: tests/vm/test_nfs.py runs one guest 10 minutes ahead).

At the end everything is healed, the queue drains, and ``check`` verifies:
every job whose enqueue returned has exactly one record and no other entry;
no record was published twice (a run that lost its lease keeps its result
aside in rejected/, never in done/ or failed/); runs match recorded attempts
(a mark for every run the processor recorded, none twice, none beyond the
attempts); a job that ran after its lease was lost is recorded once with
both attempts; dependencies ran in order; no delayed job ran before its
time; a cancel that returned at once for a queued or delayed job left it
cancelled; every ``wait`` returned the recorded outcome; ``tmp/`` and
``running/`` hold nothing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from testbed.sandbox import Sandbox

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LEASE = 4.0
MARK = 'echo "RUN $MINIQ_JOB_ID $MINIQ_ATTEMPT $(hostname) $(date +%s.%N)" >> "$LOG"\n'
WORK = "#!/bin/sh\n" + MARK + 'sleep "${1:-0}"\n'
FLAKY = "#!/bin/sh\n" + MARK + '[ "$MINIQ_ATTEMPT" = 1 ] && exit 3\nexit 0\n'


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Machine:
    name: str
    hostname: str
    parallel: int
    sandbox: Sandbox | None = None

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        assert self.sandbox is not None and self.sandbox.pid1
        return self.sandbox.run(list(args), check=check, timeout=timeout)


@dataclass
class Client:
    """What the host's clients did and saw."""

    enqueued: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> what was asked, and when
    cancels: list[tuple[str, int, str]] = field(default_factory=list)  # (id, exit code, output)
    waits: list[tuple[str, int]] = field(default_factory=list)  # (id, exit code)
    #: Enqueues refused, with when they were asked (monotonic start, end), the exit code and the error.
    refusals: list[tuple[float, float, int, str]] = field(default_factory=list)
    #: Enqueues that did not answer in time: they may or may not have written their job.
    unanswered: int = 0
    #: What went wrong in a client's own code (a thread must not die unseen).
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Nemesis:
    def __init__(self, work: Path, wheelhouse: Path, seed: int, log: Any = print) -> None:
        self.work, self.wheelhouse, self.seed, self.log = work, wheelhouse, seed, log
        self.rng = random.Random(seed)
        self.shared = work / "shared"  # a tmpfs: the file server
        self.root = self.shared / "root"
        self.logdir = work / "log"
        self.runs = self.logdir / "runs.log"
        self.machines = {
            "m1": Machine("m1", "node-a", 1),
            "m2": Machine("m2", "node-b", 2),
            "m3": Machine("m3", "node-a", 1),  # a clone: the same host name as m1
        }
        self.client = Client()
        self.waiters: list[threading.Thread] = []
        self.faults: list[str] = []
        self.noops: list[str] = []  # faults that found nothing to do: not counted
        self.full: list[tuple[float, float]] = []  # (monotonic start, end) of each time the file system was full
        self.stop = threading.Event()
        self.miniq = str(Path(os.environ.get("MINIQ_NEMESIS_CLI", REPO / ".venv" / "bin" / "miniq")))

    # -- the machines -----------------------------------------------------------

    def setup(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.shared.mkdir(exist_ok=True)
        self.logdir.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "nemesis", str(self.shared)], check=True)
        self.root.mkdir()
        (self.root / "jobs").mkdir()
        for name, body in (("work", WORK), ("flaky", FLAKY)):
            path = self.root / "jobs" / f"{name}.job"
            path.write_text(body.replace('"$LOG"', f'"{self.runs}"'))
            path.chmod(0o755)
        (self.root / "miniq.conf").write_text(f"[processor]\nlease = {LEASE:g}s\nmax-interruptions = 50\nlinger = 1s\n")
        self.runs.touch()
        for machine in self.machines.values():
            self.boot(machine, first=True)

    def boot(self, machine: Machine, first: bool = False) -> None:
        """Boot (or reboot) a machine: its own systemd, miniq kept on a disk of its own."""
        disk = self.work / f"{machine.name}-opt"
        disk.mkdir(exist_ok=True)
        sb = Sandbox(self.work / f"scratch-{machine.name}-{time.monotonic_ns()}", f"nem{machine.name}{time.monotonic_ns() % 10**6}",
                     binds=[REPO, self.wheelhouse], hostname=machine.hostname, shared=[self.shared, self.logdir, disk])  # fmt: skip
        sb.boot()
        machine.sandbox = sb
        venv = disk / "venv"
        if first:
            sb.run(["/usr/bin/python3", "-m", "venv", str(venv)], timeout=300)
            sb.run([f"{venv}/bin/pip", "install", "--quiet", "--no-index", "--find-links", str(self.wheelhouse), str(REPO)], timeout=600)
        dropin = "/etc/systemd/system/miniq-process.service.d"
        miniq = f"{venv}/bin/miniq"
        sb.run([miniq, "--root", str(self.root), "install-units", "--now", "--timer-period", "5s"], timeout=120)
        if machine.parallel > 1:
            sb.sh(f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart={miniq} process --parallel {machine.parallel}\\n'"
                  f" > {dropin}/parallel.conf && systemctl daemon-reload")  # fmt: skip

    def close(self) -> None:
        for machine in self.machines.values():
            if machine.sandbox is not None:
                machine.sandbox.close()
        subprocess.run(["umount", "-l", str(self.shared)], check=False)

    # -- the clients ------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.miniq, "--root", str(self.root), *args], capture_output=True, text=True, timeout=timeout)

    def client_loop(self, seed: int) -> None:
        """A client; every exception of its own is reported, none is lost with its thread."""
        try:
            self._client_loop(seed)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            import traceback

            with self.client.lock:
                self.client.errors.append(f"client {seed}: {e!r}\n{traceback.format_exc()}")

    def _client_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        prev: str | None = None
        while not self.stop.is_set():
            kind = rng.choice(["plain", "plain", "delayed", "retries", "after", "cancel", "wait"])
            if kind == "cancel" and prev:
                proc = self.cli("cancel", "--no-wait", prev)
                with self.client.lock:
                    self.client.cancels.append((prev, proc.returncode, proc.stdout.strip()))
                continue
            if kind == "wait" and prev:
                waiter = threading.Thread(target=self._wait, args=(prev,), daemon=True)
                with self.client.lock:
                    self.waiters.append(waiter)
                waiter.start()
                continue
            args, asked = ["--priority", str(rng.randint(-3, 3))], {"kind": kind}
            if kind == "delayed":
                delay = rng.randint(1, 6)
                args += ["--in", f"{delay}s"]
                asked["due"] = time.time() + delay  # the CLI reads its clock after this
            elif kind == "after" and prev:
                args += ["--after", prev]
                asked["after"] = prev
            name = "flaky" if kind == "retries" else "work"
            if kind == "retries":
                args += ["--retries", "2"]
            began = time.monotonic()
            try:
                proc = self.cli("enqueue", *args, name, str(rng.choice([0, 0, 1, 2])) if name == "work" else "x")
            except subprocess.TimeoutExpired:
                with self.client.lock:
                    self.client.unanswered += 1
                continue
            ended = time.monotonic()
            lines = proc.stdout.strip().splitlines()
            if proc.returncode == 0:
                if len(lines) != 1 or not lines[0].strip():
                    raise AssertionError(f"enqueue exited 0 without one id: {proc.stdout!r} {proc.stderr!r}")
                prev = lines[0]
                with self.client.lock:
                    self.client.enqueued[prev] = asked
            else:
                with self.client.lock:  # checked against the disk's state: check()
                    self.client.refusals.append((began, ended, proc.returncode, proc.stderr.strip()))
            time.sleep(rng.uniform(0, 0.3))

    def _wait(self, job_id: str) -> None:
        try:
            proc = self.cli("wait", "--timeout", "600", job_id, timeout=700)
        except BaseException as e:  # noqa: BLE001 - reported by check()
            with self.client.lock:
                self.client.errors.append(f"wait {job_id}: {e!r}")
            return
        with self.client.lock:
            self.client.waits.append((job_id, proc.returncode))

    # -- the nemesis ------------------------------------------------------------

    def processor_pids(self, machine: Machine) -> list[int]:
        out = machine.run("pgrep", "-f", "miniq.* process", check=False).stdout.split()
        return [int(p) for p in out]

    def fault(self) -> str:
        machine = self.machines[self.rng.choice(list(self.machines))]
        what = self.rng.choice(["kill", "kill", "freeze", "power", "disk"])
        if what == "kill":
            pids = self.processor_pids(machine)
            if not pids:
                return f"{machine.name}: no processor to kill"
            pid = self.rng.choice(pids)
            machine.run("kill", "-9", str(pid), check=False)
            return f"{machine.name}: kill -9 of processor process {pid}"
        if what == "freeze":
            pids = [str(p) for p in self.processor_pids(machine)]  # with parallel 2: its workers too
            if not pids:
                return f"{machine.name}: no processor to freeze"
            machine.run("kill", "-STOP", *pids, check=False)
            time.sleep(LEASE + 2)
            machine.run("kill", "-CONT", *pids, check=False)
            return f"{machine.name}: processor processes {' '.join(pids)} stopped for {LEASE + 2:g} s (lease {LEASE:g} s), then continued"
        if what == "power":
            assert machine.sandbox is not None
            machine.sandbox.close()
            time.sleep(self.rng.uniform(0, 3))
            self.boot(machine)
            return f"{machine.name}: power cut and reboot"
        filler = self.shared / "filler"
        free = shutil.disk_usage(self.shared).free
        began = time.monotonic()
        subprocess.run(["fallocate", "-l", str(max(free - 4096, 4096)), str(filler)], check=False)
        held = self.rng.uniform(2, 6)
        time.sleep(held)
        filler.unlink(missing_ok=True)
        self.full.append((began, time.monotonic()))
        return f"file system full for {held:.1f} s"

    def run(self, seconds: float) -> dict[str, Any]:
        self.log(f"nemesis: seed {self.seed}, {seconds:.0f} s, work directory {self.work}")
        self.setup()
        try:
            clients = [threading.Thread(target=self.client_loop, args=(self.rng.randrange(2**31),), daemon=True) for _ in range(3)]
            for t in clients:
                t.start()
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                time.sleep(self.rng.uniform(2, 6))
                started = time.monotonic()
                text = self.fault()
                if text.endswith(("no processor to kill", "no processor to freeze")):
                    self.noops.append(text)  # nothing happened: not a fault
                    self.log(f"no fault ({text})")
                    continue
                self.faults.append(text)
                self.log(f"fault {len(self.faults)} ({time.monotonic() - started:.1f} s): {text}")
            self.stop.set()
            for t in clients:
                t.join(timeout=300)
                if t.is_alive():
                    self.client.errors.append(f"client thread {t.name} did not end within 300 s of the stop")
            drained = self.drain()
            return self.check(drained)
        finally:
            self.close()

    def drain(self, timeout: float = 300) -> float:
        started = time.monotonic()
        (self.shared / "filler").unlink(missing_ok=True)
        while True:
            left = [p.name for d in ("queue", "delayed", "running") for p in (self.root / d).glob("*.json")]
            waiting = [t for t in self.waiters if t.is_alive()]
            if not left and not waiting:
                break
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not drained after {timeout:.0f} s: {left[:5]}, {len(waiting)} waits still running")
            time.sleep(1)
        for machine in self.machines.values():
            machine.run("systemctl", "stop", "miniq-process.path", "miniq-process.timer", "miniq-process.service")
            failed = machine.run("systemctl", "list-units", "--failed", "--plain", "--no-legend", "miniq*").stdout.strip()
            if failed:
                journal = machine.run("journalctl", "-u", "miniq-process", "-n", "40", "--no-pager", check=False).stdout
                raise AssertionError(f"{machine.name}: failed units: {failed}\n{journal}")
        return time.monotonic() - started

    # -- the verdict ------------------------------------------------------------

    def records(self) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for state in ("done", "failed"):
            for path in (self.root / state).glob("*.json"):
                assert path.stem not in found, f"job {path.stem} is both done and failed"
                found[path.stem] = json.loads(path.read_text())
        return found

    def marks(self) -> dict[str, list[tuple[int, float]]]:
        runs: dict[str, list[tuple[int, float]]] = {}
        for line in self.runs.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == "RUN":
                runs.setdefault(parts[1], []).append((int(parts[2]), float(parts[4])))
        return runs

    def check(self, drained: float) -> dict[str, Any]:
        records, marks, problems = self.records(), self.marks(), []
        leftovers = [p.name for d in ("queue", "delayed", "running", "tmp") for p in (self.root / d).iterdir()]
        if leftovers:
            problems.append(f"left in the queue: {leftovers[:10]}")
        aside = [p.name for p in (self.root / "rejected").glob("*@*.json")]
        lost_lease = 0
        problems += [f"a client failed: {e}" for e in self.client.errors]
        # A refusal is the disk's doing: it came while the file system was full, and said so.
        for began, ended, code, error in self.client.refusals:
            if not any(began <= end + 1.0 and ended >= start for start, end in self.full):
                problems.append(f"an enqueue was refused while the disk was not full (exit {code}): {error}")
            elif "No space left on device" not in error or code != 1:
                problems.append(f"an enqueue refused on a full disk said (exit {code}): {error}")
        # ...and wrote nothing: a job nobody was told the id of may exist only for a call that never answered.
        unacknowledged = sorted(set(records) - set(self.client.enqueued))
        if len(unacknowledged) > self.client.unanswered:
            problems.append(f"jobs nobody was told of were written: {unacknowledged[:5]} ({len(unacknowledged)}, "
                            f"{self.client.unanswered} enqueues unanswered)")  # fmt: skip
        ran_unacknowledged = sorted(set(marks) - set(self.client.enqueued))
        if len(ran_unacknowledged) > self.client.unanswered:
            problems.append(f"jobs nobody was told of ran: {ran_unacknowledged[:5]}")
        for job_id, asked in self.client.enqueued.items():
            record = records.get(job_id)
            if record is None:
                problems.append(f"job {job_id} ({asked['kind']}) was lost")
                continue
            attempts = record.get("attempts", [])
            runs = marks.get(job_id, [])
            numbers = [k for k, _ in runs]
            if len(set(numbers)) != len(numbers) or any(k > len(attempts) for k in numbers):
                problems.append(f"job {job_id}: runs {sorted(numbers)} do not match its {len(attempts)} attempts")
            for k, attempt in enumerate(attempts, 1):
                if attempt.get("started") and attempt["outcome"] != "interrupted" and k not in numbers:
                    problems.append(f"job {job_id}: attempt {k} ({attempt['outcome']}) recorded but never ran")
            for k, attempt in enumerate(attempts, 1):
                if attempt.get("lost_host") and "renewing its lease" in (attempt.get("reason") or ""):
                    # Taken over after its lease: recorded once (records() checks), with the lost
                    # attempt and the run after it.
                    if k == len(attempts):
                        problems.append(f"job {job_id}: its lost attempt {k} is its last; the run after it is not recorded")
                    else:
                        lost_lease += 1
            first_run = min((t for _, t in runs), default=None)
            if "due" in asked and first_run is not None and first_run < asked["due"]:
                problems.append(f"job {job_id} ran {asked['due'] - first_run:.2f} s before its time")
            dep = asked.get("after")
            if dep and first_run is not None:
                parent = records.get(dep)
                ended = _iso(parent["result"]["ended"]) if parent and parent.get("result", {}).get("ended") else None
                if parent is None or parent["state"] != "done" or (ended is not None and first_run < ended):
                    problems.append(f"job {job_id} ran before (or without) job {dep} it runs after")
        for job_id, code, out in self.client.cancels:
            record = records.get(job_id)
            if code == 0 and ("was queued" in out or "was delayed" in out):
                if record is None or record["result"]["outcome"] != "cancelled":
                    problems.append(f"job {job_id}: cancelled ({out}) but recorded {record and record['result']['outcome']}")
        for job_id, code in self.client.waits:
            record = records.get(job_id)
            expected = _wait_status(record["result"]) if record else None
            if code != expected:
                problems.append(f"wait {job_id} returned {code}, the record says {expected}")
        if problems:
            raise AssertionError(f"nemesis seed {self.seed}: " + "; ".join(problems[:15]))
        return {
            "seed": self.seed,
            "faults": len(self.faults),
            "faults that found nothing to do (not counted)": len(self.noops),
            "kinds": {k: sum(1 for f in self.faults if k in f) for k in ("kill -9", "stopped for", "power cut", "full")},
            "jobs": len(self.client.enqueued),
            "refused while full (checked)": len(self.client.refusals),
            "enqueues unanswered": self.client.unanswered,
            "unacknowledged jobs on disk": len(unacknowledged),
            "runs": sum(len(v) for v in marks.values()),
            "waits": len(self.client.waits),
            "cancels": len(self.client.cancels),
            "lost leases recorded with both attempts": lost_lease,
            "results kept aside": len(aside),
            "drained in": round(drained, 1),
        }


def _wait_status(result: dict[str, Any]) -> int:
    from miniq.core.result import Result

    return Result.from_json(result).wait_status
