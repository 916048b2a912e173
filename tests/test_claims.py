"""Claims on real files: taking, identity, leases, takeover, fencing, recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ListSink, processor

from miniq.core.files import dump
from miniq.core.job import State
from miniq.core.proc import Claimer
from miniq.core.result import Outcome, Result
from miniq.core.schedule import Schedule
from miniq.store import ending
from miniq.store.claims import Claim, LeaseLost, clean_tmp, stale_claims, take_over
from miniq.store.clock import ServerClock
from miniq.store.layout import parse_queue_name
from miniq.store.pending import Pending
from miniq.store.queue import Queue


def other(me: Claimer, **changes: object) -> Claimer:
    """Another processor: by default on this host, alive (this process's start time), another PID."""
    return me._replace(**{"pid": me.pid + 100000, **changes})  # type: ignore[arg-type]


def take_next(q: Queue, who: Claimer) -> Claim | None:
    pending = Pending(q.layout, watch=False)
    while (path := pending.next()) is not None:
        parsed = parse_queue_name(path.name)
        claim = Claim.take(q.layout, path, who, parsed[1] if parsed else None)
        if claim:
            return claim
    return None


def test_claim_is_exclusive_and_in_order(root: Path) -> None:
    q = Queue(root)
    jobs = [q.enqueue("echo", [str(i)]) for i in range(5)]
    me = Claimer.current()
    a, b = other(me, host="hostA"), other(me, host="hostB")
    claims = [take_next(q, a), take_next(q, b)]
    assert [c.id for c in claims if c] == [jobs[0].id, jobs[1].id]
    assert claims[0] and claims[0].job and claims[0].job.argv == ("0",)
    # A processor that loses the race for a file gets None, not an error.
    assert Claim.take(q.layout, root / "queue" / f"1000-{jobs[0].id}.json", me, jobs[0].id) is None
    assert sorted(os.listdir(root / "running")) == sorted([f"{jobs[0].id}@{a.name}.json", f"{jobs[1].id}@{b.name}.json"])


def test_concurrent_processes_never_share_a_job(root: Path) -> None:
    """Eight processes race to claim 400 jobs; every job is claimed exactly once."""
    q = Queue(root)
    ids = {q.enqueue("echo", [str(i)]).id for i in range(400)}
    script = (
        "import sys; from pathlib import Path; from miniq.store.queue import Queue; from miniq.store.claims import Claim\n"
        "from miniq.core.proc import Claimer; from miniq.store.pending import Pending; from miniq.store.layout import parse_queue_name\n"
        "q = Queue(Path(sys.argv[1])); me = Claimer.current(); p = Pending(q.layout)\n"
        "while (path := p.next()) is not None:\n"
        "    c = Claim.take(q.layout, path, me, parse_queue_name(path.name)[1])\n"
        "    if c: print(c.id)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE, text=True) for _ in range(8)]
    claimed = [line for p in procs for line in p.communicate()[0].split()]
    assert sorted(claimed) == sorted(ids)
    assert len(os.listdir(root / "running")) == 400
    assert os.listdir(root / "queue") == []


def test_claimer_names_carry_boot_and_pid_namespace() -> None:
    me = Claimer.current()
    assert Claimer.parse(me.name) == me
    assert len(me.boot) == 32 and me.pidns == os.stat("/proc/self/ns/pid").st_ino and me.pid == os.getpid()
    assert Claimer.parse("host@12.345") is None and Claimer.parse(None) is None


def test_only_a_provably_dead_claimer_is_judged_dead() -> None:
    me = Claimer.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert other(me, pid=dead.pid).provably_dead(me)
    assert other(me, pid=os.getpid(), start=me.start + 1).provably_dead(me)  # PID reused by another process
    assert not other(me, pid=os.getpid()).provably_dead(me)
    # The same host name, PID and start time in another PID namespace, another
    # boot or a clone of this machine: nothing can be said from the name.
    assert not other(me, pid=dead.pid, pidns=me.pidns + 1).provably_dead(me)
    assert not other(me, pid=dead.pid, boot="f" * 32).provably_dead(me)


def test_dead_processor_claims_are_recovered_and_others_left_alone(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", ["x"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert take_next(q, other(me, pid=dead.pid))
    far = q.enqueue("echo", ["y"])
    elsewhere = other(me, host="elsewhere", boot="e" * 32)
    assert take_next(q, elsewhere)
    clock = ServerClock(q.layout, me.name)
    stale = list(stale_claims(q.layout, me, 60.0, clock))
    assert [(s.id, s.host) for s in stale] == [(job.id, me.host)]
    assert stale[0].why == f"its processor (PID {dead.pid} on {me.host}) died"
    claim = take_over(q.layout, stale[0], me)
    assert claim and claim.job
    assert [(a.outcome, a.lost_host) for a in claim.job.attempts] == [(Outcome.INTERRUPTED, me.host)]
    # Another host's claim with a live lease is left to that host.
    assert sorted(os.listdir(root / "running")) == sorted([f"{far.id}@{elsewhere.name}.json", f"{job.id}@{me.name}.json"])


def test_an_expired_lease_is_judged_by_the_file_servers_clock(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", [])
    elsewhere = other(me, host="lost", boot="a" * 32)
    claim = take_next(q, elsewhere)
    assert claim is not None
    clock = ServerClock(q.layout, me.name)
    assert list(stale_claims(q.layout, me, 60.0, clock)) == []
    # The holder stopped renewing 100 s ago (as the server saw it).
    past = clock.now() - 100
    os.utime(claim.path, (past, past))
    stale = list(stale_claims(q.layout, me, 60.0, clock))
    assert [s.id for s in stale] == [job.id]
    assert stale[0].why.startswith("lost stopped renewing its lease 100 s ago (lease 60 s)")
    assert list(stale_claims(q.layout, me, 120.0, clock)) == []
    # Renewing makes it live again.
    assert claim.renew()
    assert list(stale_claims(q.layout, me, 60.0, clock)) == []


def test_a_takeover_fences_the_old_holder(root: Path) -> None:
    """The old holder can neither renew nor publish once its claim was taken over."""
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", [])
    frozen = other(me, host="frozen", boot="b" * 32)
    old = take_next(q, frozen)
    assert old is not None and old.job is not None
    clock = ServerClock(q.layout, me.name)
    past = clock.now() - 1000
    os.utime(old.path, (past, past))
    [stale] = stale_claims(q.layout, me, 60.0, clock)
    new = take_over(q.layout, stale, me)
    assert new is not None and new.job is not None
    assert not old.renew() and old.lost
    result = Result(Outcome.EXITED, exit_code=0, run="old#1")
    with pytest.raises(LeaseLost):
        old.finish(old.job.but(attempts=(result,)), result)
    assert not (root / "done" / f"{job.id}.json").exists()
    mine = Result(Outcome.EXITED, exit_code=0, run="new#2")
    new.finish(new.job.but(attempts=(*new.job.attempts, mine)), mine)
    record = json.loads((root / "done" / f"{job.id}.json").read_text())
    assert [a["outcome"] for a in record["attempts"]] == ["interrupted", "exited"]
    assert record["attempts"][0]["lost_host"] == "frozen" and record["result"]["run"] == "new#2"
    assert os.listdir(root / "running") == []


def _stall_after_the_fence(q: Queue, root: Path, me: Claimer, target: str) -> tuple[Claim, Result, object]:
    """A holder on another machine stages its end and fences, then stalls
    past its lease (the nemesis' SIGSTOP); returns it, its result and the stale claim."""
    job = q.enqueue("echo", [])
    old = take_next(q, other(me, host="frozen", boot="b" * 32))
    assert old is not None and old.job is not None
    result = Result(Outcome.EXITED, exit_code=0, run="old#1")
    if target == "record":
        old._stage_and_fence(q.layout.record(State.DONE, job.id), dump(old.job.but(attempts=(result,)).record(result, State.DONE)))
    else:
        old._stage_and_fence(q.layout.delayed_entry(job.id, 2e9), dump(old.job.to_json()))
    assert [n for n in os.listdir(root / "tmp") if n.startswith(".end~")]
    clock = ServerClock(q.layout, me.name)
    past = clock.now() - 1000
    os.utime(old.path, (past, past))
    [stale] = stale_claims(q.layout, me, 60.0, clock)
    return old, result, stale


@pytest.mark.parametrize("wakes", ["after", "during"])
def test_a_holder_stalled_after_its_fence_is_recorded_once_and_not_run_again(root: Path, wakes: str) -> None:
    """The race the nemesis found (seed 1200217339): the holder fenced, stalled
    past its lease, then published its record while its successor ran the
    job again.  Now the successor publishes the holder's staged record and
    the holder, waking before or after that, finds it published."""
    q = Queue(root)
    me = Claimer.current()
    old, result, stale = _stall_after_the_fence(q, root, me, "record")
    assert old.job is not None
    record_path = root / "done" / f"{old.id}.json"
    if wakes == "during":
        # The successor has taken the fenced claim but not yet looked for the stage.
        new = Claim.take(q.layout, stale.path, me, old.id)  # type: ignore[attr-defined]
        assert new is not None
        old.finish(old.job.but(attempts=(result,)), result)
        assert ending.complete(q.layout, old.id, ending.find(q.layout, old.id, old.me.name), new.path.name, new.owner)
        new.forget()
    else:
        assert take_over(q.layout, stale, me) is None  # nothing left to run
        assert json.loads(record_path.read_text())["result"]["run"] == "old#1"
        state, path = old.finish(old.job.but(attempts=(result,)), result)
        assert (state, path) == (State.DONE, record_path)
    record = json.loads(record_path.read_text())
    assert record["result"]["run"] == "old#1" and len(record["attempts"]) == 1
    assert os.listdir(root / "running") == [] and os.listdir(root / "queue") == [] and os.listdir(root / "delayed") == []
    assert not (root / "rejected").exists() or os.listdir(root / "rejected") == []
    assert [n for n in os.listdir(root / "tmp") if n.startswith(".end~")] == []


def test_a_postpone_stalled_after_its_fence_is_queued_once(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    old, _, stale = _stall_after_the_fence(q, root, me, "delayed")
    assert old.job is not None
    assert take_over(q.layout, stale, me) is None
    assert os.listdir(root / "delayed") == [f"2000000000000-{old.id}.json"]
    assert old.postpone(old.job, 2e9) == root / "delayed" / f"2000000000000-{old.id}.json"
    assert os.listdir(root / "delayed") == [f"2000000000000-{old.id}.json"] and os.listdir(root / "running") == []
    assert os.stat(root / "delayed" / f"2000000000000-{old.id}.json").st_nlink == 1


def test_a_holder_whose_stage_was_removed_publishes_nothing(root: Path) -> None:
    """Without a stage (cleaned after an hour, or never durable) the successor
    runs the job again, and the holder, waking, must not record it."""
    q = Queue(root)
    me = Claimer.current()
    old, result, stale = _stall_after_the_fence(q, root, me, "record")
    assert old.job is not None and old.stage is not None
    old.stage.unlink()
    new = take_over(q.layout, stale, me)
    assert new is not None and new.job is not None
    assert [a.outcome for a in new.job.attempts] == [Outcome.INTERRUPTED]
    with pytest.raises(LeaseLost):
        old.finish(old.job.but(attempts=(result,)), result)
    assert not (root / "done" / f"{old.id}.json").exists()


def test_a_lost_fence_leaves_no_stage(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    q.enqueue("echo", [])
    old = take_next(q, other(me, host="frozen", boot="b" * 32))
    assert old is not None and old.job is not None
    os.rename(old.path, q.layout.claim(old.id, me.name))  # taken over before the fence
    result = Result(Outcome.EXITED, exit_code=0, run="old#1")
    with pytest.raises(LeaseLost):
        old.finish(old.job.but(attempts=(result,)), result)
    assert [n for n in os.listdir(root / "tmp") if n.startswith(".end~")] == []


def test_a_stage_made_before_a_fence_never_passed_is_removed_at_takeover(root: Path) -> None:
    """The holder staged its record and stalled before its fence: the job runs
    again, and the stage is not left in tmp/ for anyone to publish."""
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", [])
    old = take_next(q, other(me, host="frozen", boot="b" * 32))
    assert old is not None
    stage = ending.stage(q.layout, q.layout.record(State.DONE, job.id), old.me.name, b"{}\n", None)
    clock = ServerClock(q.layout, me.name)
    past = clock.now() - 1000
    os.utime(old.path, (past, past))
    [stale] = stale_claims(q.layout, me, 60.0, clock)
    new = take_over(q.layout, stale, me)
    assert new is not None and new.job is not None and not stage.exists()
    assert os.listdir(root / "tmp") == [] and not (root / "done" / f"{job.id}.json").exists()


def test_a_stage_is_kept_while_its_fenced_claim_is(root: Path) -> None:
    """clean_tmp leaves a dead or old holder's stage to whoever recovers its claim."""
    q = Queue(root)
    me = Claimer.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    job = q.enqueue("echo", [])
    ghost = other(me, pid=dead.pid)
    claim = take_next(q, ghost)
    assert claim is not None and claim.job is not None
    claim._stage_and_fence(q.layout.record(State.DONE, job.id), b"{}\n")
    assert claim.stage is not None
    later = lambda: time.time() + 7200  # noqa: E731
    clean_tmp(q.layout, me, later)
    assert claim.stage.exists()
    claim.path.unlink()
    clean_tmp(q.layout, me, later)
    assert not claim.stage.exists()


def test_a_record_is_never_replaced(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", [])
    claim = take_next(q, me)
    assert claim is not None and claim.job is not None
    (root / "done" / f"{job.id}.json").write_text('{"someone": "else"}')
    result = Result(Outcome.EXITED, exit_code=0, run="r#1")
    state, path = claim.finish(claim.job.but(attempts=(result,)), result)
    assert json.loads((root / "done" / f"{job.id}.json").read_text()) == {"someone": "else"}
    assert path.parent == root / "rejected" and json.loads(path.read_text())["result"]["run"] == "r#1"


def test_a_crash_after_the_fence_is_recovered(root: Path) -> None:
    """A processor died between fencing its claim and publishing the record:
    the job runs again; if the record was published, the leftover is removed."""
    q = Queue(root)
    me = Claimer.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    ghost = other(me, pid=dead.pid)
    unpublished, published = q.enqueue("echo", ["1"]), q.enqueue("echo", ["2"])
    for _ in (unpublished, published):
        claim = take_next(q, ghost)
        assert claim is not None
        claim._fence()
    (root / "done" / f"{published.id}.json").write_text("{}")
    summary = processor(root)[0].run()
    assert summary.recovered == [unpublished.id]
    assert os.listdir(root / "running") == []
    attempts = q.read(unpublished.id).data["attempts"]
    assert attempts[0]["outcome"] == "interrupted"


def test_an_interrupted_job_waits_behind_others_keeps_its_priority_and_fails_after_n(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    poison = q.enqueue("echo", ["again"], schedule=Schedule(priority=3))
    good = q.enqueue("echo", ["good"])
    for n in range(1, 4):
        dead = subprocess.Popen(["true"])
        dead.wait()
        claim = take_next(q, other(me, pid=dead.pid))
        assert claim is not None and claim.id == poison.id  # highest priority first
        sink = ListSink()
        p, wakes = processor(root, sink)
        summary = p.run()
        assert summary.recovered == [poison.id]
        if n == 1:
            assert summary.succeeded == [good.id]  # the job behind it ran meanwhile
        if n < 3:
            assert q.locate(poison.id)[0] is State.DELAYED
            assert wakes and wakes[0] - time.time() == pytest.approx(2 ** (n - 1), abs=0.5)
            path = q.locate(poison.id)[1]
            os.rename(path, root / "queue" / f"0997-{poison.id}.json")  # as if its backoff passed
    record = q.read(poison.id)
    assert record.state is State.FAILED and record.result is not None
    assert record.result.outcome is Outcome.INTERRUPTED
    assert record.result.reason is not None and "interrupted 3 times" in record.result.reason
    assert "max-interruptions = 3" in record.result.reason
    # Three runs, three attempts; the last is the result; wait says so with its own status.
    assert [a.outcome for a in record.job.attempts] == [Outcome.INTERRUPTED] * 3  # type: ignore[union-attr]
    assert record.job.attempts[-1] == record.result  # type: ignore[union-attr]
    assert record.result.wait_status == 126


def test_a_cancel_request_takes_effect_at_recovery(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", [])
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert take_next(q, other(me, pid=dead.pid))
    assert q.cancel(job.id, me) is State.RUNNING  # its processor is provably dead: cancelled at once
    record = q.read(job.id)
    assert record.state is State.FAILED and record.result and record.result.outcome is Outcome.CANCELLED
    assert os.listdir(root / "running") == [] and os.listdir(root / "cancel") == []


def test_live_claims_are_not_recovered(root: Path) -> None:
    q = Queue(root)
    q.enqueue("echo", [])
    assert take_next(q, Claimer.current())
    me = other(Claimer.current())
    assert list(stale_claims(q.layout, me, 60.0, ServerClock(q.layout, me.name))) == []
    assert len(os.listdir(root / "running")) == 1


def test_requeue_of_a_lost_job(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", [])
    host = other(me, host="gone", boot="c" * 32)
    assert take_next(q, host)
    with pytest.raises(Exception, match="its processor's lease is live"):
        q.requeue(job.id)
    path = q.requeue(job.id, force=True)
    assert path.parent == root / "queue"
    assert q.read(job.id).data["attempts"][0]["reason"].startswith("requeued by ")


def test_a_new_claim_never_shows_the_old_time_of_its_file(root: Path) -> None:
    """A job queued long ago is claimed with a fresh lease: another processor
    must not take the claim for one whose holder stopped renewing it."""
    q = Queue(root)
    job = q.enqueue("echo", [])
    path = root / "queue" / f"1000-{job.id}.json"
    os.utime(path, (time.time() - 3600, time.time() - 3600))
    me = Claimer.current()
    assert take_next(q, other(me, host="holder", boot="d" * 32))
    judge = other(me, host="judge")
    assert list(stale_claims(q.layout, judge, 60.0, ServerClock(q.layout, judge.name))) == []


def test_file_system_type_is_read_from_statfs(tmp_path: Path) -> None:
    from miniq.core.files import fs_type, on_nfs

    assert fs_type(Path("/proc")) == 0x9FA0  # PROC_SUPER_MAGIC
    assert fs_type(Path("/dev/shm")) == 0x01021994  # TMPFS_MAGIC
    assert fs_type(tmp_path / "nowhere") is None
    assert not on_nfs(tmp_path)


def test_a_claim_on_nfs_is_written_afresh_after_it_is_read(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Over NFS the claim read by its processor is replaced by a new inode, on
    # which no machine holds a delegation (claims.py; tests/vm/test_nfs.py).
    q = Queue(root)
    job = q.enqueue("echo", ["x"])
    me = Claimer.current()
    monkeypatch.setattr("miniq.store.layout.Layout.on_nfs", True)
    before = os.stat(q.layout.queue / next(iter(os.listdir(q.layout.queue)))).st_ino
    claim = take_next(q, me)
    assert claim is not None and claim.job is not None and claim.job.id == job.id
    assert os.stat(claim.path).st_ino != before
    assert json.loads(claim.path.read_bytes())["id"] == job.id


def _lose_to_another_boot(q: Queue, me: Claimer) -> str:
    """The next job's claim held by this host before a reboot (another boot id), its lease long expired."""
    claim = take_next(q, other(me, boot="b" * 32))
    assert claim is not None
    clock = ServerClock(q.layout, me.name)
    past = clock.now() - 1000
    os.utime(claim.path, (past, past))
    clock.close()
    return claim.id


def test_a_run_lost_with_its_machine_is_not_the_jobs_fault(root: Path) -> None:
    """Power cuts (another boot judged the claim) never spend max-interruptions:
    five of them, with max-interruptions = 1, and the job still runs and succeeds;
    max-lost-runs bounds them, named in the reason."""
    (root / "miniq.conf").write_text("[processor]\nmax-interruptions = 1\nmax-lost-runs = 6\n")
    q = Queue(root)
    me = Claimer.current()
    job = q.enqueue("echo", ["survivor"])
    for _ in range(5):
        assert _lose_to_another_boot(q, me) == job.id
        summary = processor(root)[0].run()
        assert summary.recovered == [job.id] and q.locate(job.id)[0] is State.DELAYED  # back, for a second
        os.rename(q.locate(job.id)[1], root / "queue" / f"1000-{job.id}.json")  # as if its second passed
    summary = processor(root)[0].run()
    assert summary.succeeded == [job.id]
    record = q.read(job.id)
    causes = [(a.outcome, a.cause) for a in record.job.attempts]  # type: ignore[union-attr]
    assert causes == [(Outcome.INTERRUPTED, "lost")] * 5 + [(Outcome.EXITED, None)]
    # Six lost runs in a row: failed, and the reason names max-lost-runs.
    again = q.enqueue("echo", ["unlucky"])
    for n in range(6):
        assert _lose_to_another_boot(q, me) == again.id
        processor(root)[0].run()
        if n < 5:
            os.rename(q.locate(again.id)[1], root / "queue" / f"1000-{again.id}.json")
    record = q.read(again.id)
    assert record.state is State.FAILED and record.result is not None
    assert record.result.reason is not None and "6 of its runs were lost with their machine or scope" in record.result.reason
    assert "max-lost-runs = 6" in record.result.reason and record.result.wait_status == 126


def test_a_processor_that_died_on_this_machine_counts_and_a_stop_does_not(root: Path) -> None:
    q = Queue(root)
    me = Claimer.current()
    q.enqueue("echo", ["x"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    claim = take_next(q, other(me, pid=dead.pid))
    assert claim is not None
    clock = ServerClock(q.layout, me.name)
    [stale] = list(stale_claims(q.layout, me, 60.0, clock))
    taken = take_over(q.layout, stale, me)
    assert taken and taken.job and taken.job.attempts[-1].cause == "died"
    assert taken.job.interruptions == 1 and taken.job.lost_runs == 0
    stopped = Result.unrun(Outcome.INTERRUPTED, "its processor was stopped", "h", cause="stopped")
    assert not stopped.counts_as_interruption and not stopped.counts_as_lost
    old = Result.from_json({"outcome": "interrupted", "reason": "0.3's records have no cause"})
    assert old.counts_as_interruption  # counted as before
    with pytest.raises(ValueError, match="result field 'cause' must be one of"):
        Result.from_json({"outcome": "interrupted", "cause": "bad luck"})
