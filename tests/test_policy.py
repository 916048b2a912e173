"""The one gate (policy.py): every door a job enters by, on real files.

``test_every_writer_of_queue_and_delayed_is_a_door_or_an_admitted_move``
reads miniq's code and lists every place that builds the name of an entry of
``queue/`` or ``delayed/``; each must be a door that takes what ``admit``
returns (or calls it), or a move of a job that was admitted already (then the
run gate, ``at_start``, judges it again before it starts).  A new place fails
it until it is put in one of the two tables with its reason.
``test_every_door_is_tested`` fails when a ``Door`` has no test below.

The shared-queue rules need root: a root process acting for a user (the
helper, a root processor) is what makes a queue shared.  CI runs as root.
"""

from __future__ import annotations

import ast
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import function_node, modules, process, result_of, write_job

from miniq.core.caller import Caller
from miniq.core.errors import BadInput, NotPermitted
from miniq.core.job import Job
from miniq.core.limits import Limits
from miniq.core.proc import Claimer
from miniq.core.result import Outcome, Result
from miniq.core.schedule import Schedule
from miniq.store.batch import Item, enqueue_batch
from miniq.store.config import Config
from miniq.store.layout import Layout
from miniq.store.policy import Ask, Door, Owner, admit, at_start, held_to
from miniq.store.queue import Queue

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="a shared queue needs a root process (CI runs as root)")

# -- the enumeration --------------------------------------------------------------

#: Names that build an entry of queue/ or delayed/ (layout.py), and the claim's moves there (claims.py).
BUILDERS = {"queued", "delayed_entry", "queue_name", "delayed_name", "requeue", "postpone"}

#: Doors: each takes an ``Admitted`` or calls ``admit`` itself.
DOORS = {
    "store.queue.Queue.publish": "enqueue: writes the job Queue.enqueue admitted",
    "store.queue.Queue.put_back": "retry: moves back the job Queue.retry admitted",
    "store.queue.Queue.requeue": "requeue: admits the job before it takes its claim over",
    "store.batch.enqueue_batch": "enqueue --stdin: admits every job, then stages them",
    "store.followup.publish": "follow-up: writes the job queue_follow_up admitted",
    "cli.main.requeue": "the command: calls Queue.requeue, the door",
}
#: Moves of a job admitted before: the run gate (at_start) judges it again before it starts.
MOVES = {
    "store.claims.Claim.postpone": "the claim's move to delayed/ (its callers are listed here)",
    "store.claims.Claim.requeue": "the claim's move to queue/ (its callers are listed here)",
    "run.processor.Processor._interrupted": "an interrupted run's backoff",
    "run.processor.Processor._admit": "held: its type is paused or at its cap",
    "run.processor.Processor.conclude": "a failed run's retry backoff",
    "run.promote._reject": "an entry that was fine after all goes back to what it waited for",
    "run.promote._to_queue": "a due or released job into queue/",
    "run.promote._due": "a due job that still waits for its dependencies",
}
#: Names built to look a job up, never to write one.
LOOKUPS = {
    "store.layout.Layout.queued": "the name itself",
    "store.layout.Layout.delayed_entry": "the name itself",
    "store.layout.Layout.candidates": "where a job may be",
    "store.layout.queue_sort_key": "run order of a name",
}


def _call_sites() -> dict[str, set[str]]:
    """Enclosing function -> builder names it calls, over every module of miniq."""
    found: dict[str, set[str]] = {}
    for module, path in modules().items():
        tree = ast.parse(path.read_text())

        def visit(node: ast.AST, scope: list[str]) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(child, [*scope, child.name])
                    continue
                if isinstance(child, ast.Call):
                    func = child.func
                    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
                    if name in BUILDERS and len(scope) > 1:
                        found.setdefault(".".join(scope), set()).add(name)
                visit(child, scope)

        visit(tree, [module])
    return found


def _function(qualname: str) -> ast.FunctionDef:
    node = function_node(qualname)
    assert isinstance(node, ast.FunctionDef)
    return node


def test_every_writer_of_queue_and_delayed_is_a_door_or_an_admitted_move() -> None:
    sites = set(_call_sites())
    known = set(DOORS) | set(MOVES) | set(LOOKUPS)
    assert not sites - known, (
        f"new places build a queue/ or delayed/ entry: {sorted(sites - known)}; route a new job through policy.admit "
        "(a door: take an Admitted) or list a move of an admitted job in MOVES with its reason"
    )
    assert not known - sites, f"listed but gone (update the tables): {sorted(known - sites)}"
    for door in DOORS:
        node = _function(door)
        takes = any(isinstance(a.annotation, ast.Name) and a.annotation.id == "Admitted" for a in node.args.args)
        admits = any(isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) in ("admit", "requeue")
                     for n in ast.walk(node))  # fmt: skip
        assert takes or admits, f"{door} neither takes an Admitted nor calls admit"


def test_only_the_gate_makes_an_admitted() -> None:
    for path in modules().values():
        if path.name == "policy.py":
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Admitted"]
        assert not calls, f"{path.name} makes an Admitted itself"


# -- a shared queue ---------------------------------------------------------------


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A root-owned queue with job types root trusts, and a user (nobody) to act for."""
    r = tmp_path / "root"
    write_job(r, "echo", '#!/bin/sh\nprintf "%s\\n" "$@"\n')
    write_job(r, "notify", "#!/bin/sh\necho notified\n")
    Queue(r).ensure_layout()
    return r


def conf(root: Path, text: str) -> None:
    (root / "miniq.conf").write_text(text)


def nobody(root: Path) -> Queue:
    return Queue(root, Caller(NOBODY, NOBODY, (), 1))


def test_owner_comes_from_the_databases() -> None:
    owner = Owner.of(NOBODY)
    assert owner.user == "nobody" and "nogroup" in owner.groups
    assert Owner.of(4_000_000_000) == Owner(4_000_000_000, "4000000000", ())


@root_only
def test_enqueue_door(shared: Path) -> None:
    conf(shared, "[access]\ngroup = nogroup\ncap-memory-max = 64M\nmax-queued = 2\n")
    q = nobody(shared)
    with pytest.raises(NotPermitted, match=r"^--memory-max 1T is over what the system queue gives your jobs: the most is 64M$"):
        q.enqueue("echo", [], Limits(memory_max=2**40))
    with pytest.raises(NotPermitted, match=r"^--nice -20 is over what the system queue gives your jobs: the lowest is 0$"):
        q.enqueue("echo", [], Limits(nice=-20))
    with pytest.raises(NotPermitted, match="priority 5 is above the highest you may give"):
        q.enqueue("echo", [], schedule=Schedule(priority=5))
    with pytest.raises(BadInput, match="invalid start time"):
        q.enqueue("echo", [], schedule=Schedule(not_before=time.time() + 11 * 365 * 86400))
    q.enqueue("echo", ["a"], Limits(memory_max=2**20, nice=3))
    q.enqueue("echo", ["b"])
    with pytest.raises(NotPermitted, match="^you have 2 jobs queued, delayed or running"):
        q.enqueue("echo", ["c"])
    # The library as root, for a user: the same rules, the user's.
    with pytest.raises(NotPermitted, match="nobody has 2 jobs queued|you have 2 jobs queued"):
        Queue(shared).enqueue("echo", ["d"], owner=(NOBODY, NOBODY))
    conf(shared, "[access]\ngroup = lab-that-does-not-exist\n")
    with pytest.raises(NotPermitted, match="^the system queue takes jobs only from members of group 'lab-that-does-not-exist'"):
        q.enqueue("echo", [])
    assert len(list((shared / "queue").iterdir())) == 2  # nothing written by a refusal


@root_only
def test_batch_door(shared: Path) -> None:
    conf(shared, "[access]\nmax-queued = 3\n")
    q = nobody(shared)
    with pytest.raises(NotPermitted, match="priority 1000 is above"):  # a line's own priority passes the gate too
        enqueue_batch(q, "echo", [Item(("a",)), Item(("b",), priority=1000)])
    with pytest.raises(NotPermitted, match="you have 0 jobs queued"):  # 4 over a cap of 3: all or none
        enqueue_batch(q, "echo", [Item((str(i),)) for i in range(4)])
    with pytest.raises(BadInput, match="^job 2: argument 1 is not text a program can receive"):
        enqueue_batch(q, "echo", [Item(("a",)), Item(("\ud800",))])
    assert list((shared / "queue").iterdir()) == []
    assert len(enqueue_batch(q, "echo", [Item((str(i),)) for i in range(3)])) == 3


@root_only
def test_retry_door(shared: Path) -> None:
    conf(shared, "[access]\nmax-queued = 2\ngroup = nogroup\n")
    q = nobody(shared)
    held = [q.enqueue("echo", [str(i)]).id for i in range(2)]
    first = held[0]
    q.cancel(first)
    other = q.enqueue("echo", ["x"]).id  # the cancel freed a place
    with pytest.raises(NotPermitted, match="^you have 2 jobs queued, delayed or running"):
        q.retry(first)
    q.cancel(other)
    conf(shared, "[access]\ngroup = lab-that-does-not-exist\n")  # no longer a member: retry is refused too
    with pytest.raises(NotPermitted, match="takes jobs only from members"):
        q.retry(first)
    conf(shared, "[access]\ngroup = nogroup\n")
    q.retry(first)
    assert q.locate(first)[0].label == "queued"


@root_only
def test_requeue_door(shared: Path) -> None:
    q = nobody(shared)
    job_id = q.enqueue("echo", ["lost"]).id
    # A claim whose holder is provably dead: this host, this boot, a PID that is gone.
    dead = Claimer.current()._replace(pid=_dead_pid(), start=1)
    source = next((shared / "queue").iterdir())
    claim = shared / "running" / f"{job_id}@{dead.name}.json"
    os.rename(source, claim)
    conf(shared, "[access]\ngroup = lab-that-does-not-exist\n")
    with pytest.raises(NotPermitted, match="takes jobs only from members"):
        Queue(shared).requeue(job_id, force=True)
    assert claim.exists()  # refused before anything moved
    conf(shared, "")
    Queue(shared).requeue(job_id, force=True)
    assert Queue(shared).locate(job_id)[0].label == "queued"


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@root_only
def test_follow_up_door(shared: Path) -> None:
    from miniq.store.followup import queue_follow_up

    conf(shared, "[access]\ngroup = lab-that-does-not-exist\n")
    layout = Layout(shared)
    job = Job.new("echo", [], uid=NOBODY).but(on_failure="notify")
    failed = Result.unrun(Outcome.EXITED, "", "h").but(exit_code=1)
    follow = queue_follow_up(layout, job, failed, (NOBODY, NOBODY))
    assert follow is not None and list((shared / "queue").iterdir()) == []
    record = Queue(shared).read(follow.id)
    assert record.state.label == "failed" and record.owner == NOBODY
    assert record.result is not None and record.result.reason is not None
    assert record.result.reason.startswith(f"follow-up of job {job.id} not queued: the system queue takes jobs only from members")
    conf(shared, "")
    again = queue_follow_up(layout, job.but(id=job.id[:-1] + "0"), failed, (NOBODY, NOBODY))
    assert again is not None and Queue(shared).locate(again.id)[0].label == "queued"


def test_every_door(tmp_path: Path, root: Path) -> None:
    """The gate judges what each firing will queue before any unit is written."""
    from miniq.core.manager import Manager
    from miniq.systemd import every

    os.environ["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    try:
        with pytest.raises(BadInput, match="^no job type 'nope'"):
            every.add(Manager.USER, root, "daily", "nope", [])
        with pytest.raises(BadInput, match="not text a program can receive"):
            every.add(Manager.USER, root, "daily", "echo", ["\ud800"])
        with pytest.raises(BadInput, match="^invalid calendar"):
            every.add(Manager.USER, root, "daily\x1b[2K", "echo", [])
    finally:
        del os.environ["XDG_CONFIG_HOME"]
    assert not (tmp_path / "config").exists()


DOOR_TESTS: dict[Door, Callable[..., None]] = {
    Door.ENQUEUE: test_enqueue_door,
    Door.BATCH: test_batch_door,
    Door.RETRY: test_retry_door,
    Door.REQUEUE: test_requeue_door,
    Door.FOLLOW_UP: test_follow_up_door,
    Door.EVERY: test_every_door,
}


def test_every_door_is_tested() -> None:
    assert set(DOOR_TESTS) == set(Door), f"doors without a test: {set(Door) - set(DOOR_TESTS)}"


# -- the run gate -----------------------------------------------------------------


def test_caps_hold_what_a_job_is_given() -> None:
    caps = Limits(memory_max=64 * 2**20, timeout=60.0, nice=-5)
    assert held_to(Limits(memory_max=2**40, timeout=86400.0), caps) == Limits(memory_max=64 * 2**20, timeout=60.0)
    assert held_to(Limits(), caps) == Limits(memory_max=64 * 2**20, timeout=60.0)  # unset gets the cap
    assert held_to(Limits(nice=-20), caps).nice == -5
    assert held_to(Limits(nice=-20), Limits()).nice == 0  # below 0 only where granted
    assert held_to(Limits(nice=7, cpu_quota=50), Limits()) == Limits(nice=7, cpu_quota=50)
    assert held_to(Limits(), Limits(nice=10)).nice == 10


def test_caps_come_from_user_then_most_generous_group_then_access(tmp_path: Path) -> None:
    conf(tmp_path, "[access]\ncap-memory-max = 1G\ncap-timeout = 1h\n[user:alice]\ncap-timeout = 1m\n"
                   "[group:ops]\ncap-nice = -5\ncap-memory-max = 4G\n[group:dev]\ncap-nice = -2\ncap-memory-max = 2G\n")  # fmt: skip
    config = Config.load(tmp_path)
    assert config.caps_for("alice", ("dev", "ops")) == Limits(memory_max=4 * 2**30, timeout=60.0, nice=-5)
    assert config.caps_for("bob", ()) == Limits(memory_max=2**30, timeout=3600.0)
    conf(tmp_path, "[user:alice]\ncap-bogus = 1\n")
    with pytest.raises(BadInput, match="unknown limit 'cap-bogus'"):
        Config.load(tmp_path)


@root_only
def test_the_run_gate_holds_queued_jobs_to_the_owners_rules_now(shared: Path) -> None:
    conf(shared, "[limits]\nmemory-max = 8G\n[user:nobody]\ncap-memory-max = 64M\n")
    config = Config.load(shared)
    owner = Owner.of(NOBODY)
    job = Job.new("echo", [], Limits(nice=-10), uid=NOBODY)
    assert at_start(Layout(shared), config, owner, job) == Limits(memory_max=64 * 2**20, nice=0)
    conf(shared, "[access]\ngroup = lab-that-does-not-exist\n")
    reason = at_start(Layout(shared), Config.load(shared), owner, job)
    assert isinstance(reason, str) and reason.startswith("not run: its owner nobody may no longer use the system queue")
    root_job = Job.new("echo", [], Limits(nice=-10))
    assert at_start(Layout(shared), Config.load(shared), Owner.current(), root_job) == Limits(nice=-10)  # root's own: no policy


@root_only
def test_a_users_niceness_is_set_after_the_drop_and_below_zero_only_as_granted(tmp_path: Path) -> None:
    """The fork gate's child (spawn.py): as the user, what the run gate allowed."""
    from miniq.core.users import Identity
    from miniq.run.spawn import ExecSpec, release, spawn_gated

    def run(nice: int) -> list[str]:
        spec = ExecSpec("/bin/sh", (b"-c", b"cut -d' ' -f19 /proc/self/stat; id -u"), {"PATH": "/usr/bin:/bin"}, "/",
                        Limits(nice=nice), Identity.of(NOBODY))  # fmt: skip
        gated = spawn_gated(spec)
        release(gated)
        os.waitpid(gated.pid, 0)
        out = os.read(gated.stdout, 4096).decode().split()
        os.close(gated.stdout)
        os.close(gated.stderr)
        return out

    assert run(5) == ["5", str(NOBODY)]
    assert run(-3) == ["-3", str(NOBODY)]  # only because at_start let it through (cap-nice)


def test_a_users_own_queue_refuses_a_niceness_they_may_not_set() -> None:
    """Rule 4, in a process of an unprivileged user (a fork that became nobody, when run as root)."""
    import tempfile

    place = Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        place.chmod(0o755)
        write_job(place, "echo", "#!/bin/sh\n")
        (place / "jobs").chmod(0o755)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            try:
                if os.geteuid() == 0:
                    os.setgid(NOBODY)
                    os.setuid(NOBODY)
                try:
                    admit(Layout(place), Door.ENQUEUE, [Ask("echo", limits=Limits(nice=-5))])
                    answer = "admitted"
                except NotPermitted as e:
                    answer = e.message
                admit(Layout(place), Door.ENQUEUE, [Ask("echo", limits=Limits(nice=5))])
                os.write(write, answer.encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        answer = os.read(read, 4096).decode()
        os.close(read)
    finally:
        shutil.rmtree(place)
    assert answer == "niceness -5 is below 0, the lowest you may set (RLIMIT_NICE)", answer


def test_values_out_of_range_are_bad_input_with_nothing_written(root: Path) -> None:
    q = Queue(root)
    for bad, expected in [
        (dict(argv=["\ud800"]), "argument 1 is not text a program can receive"),
        (dict(argv=["a\0b"]), "NUL byte"),
        (dict(schedule=Schedule(priority=1001)), "invalid priority 1001"),
        (dict(schedule=Schedule(retries=101)), "invalid retries 101"),
        (dict(schedule=Schedule(not_before=-1.0)), "invalid start time"),
        (dict(schedule=Schedule(after=("x" * 30,))), "invalid job id"),
        (dict(limits=Limits(memory_max=-1)), "invalid memory-max"),
        (dict(unique="a\x1bb"), "invalid unique key"),
    ]:
        with pytest.raises(BadInput, match=expected):
            q.enqueue("echo", **{"argv": [], **bad})  # type: ignore[arg-type]
    assert not any((root / d).exists() and list((root / d).iterdir()) for d in ("queue", "delayed"))


def test_a_processor_does_not_start_a_job_whose_type_broke_while_it_waited(root: Path) -> None:
    job_id = Queue(root).enqueue("echo", ["x"]).id
    shutil.copy("/bin/true", root / "jobs" / "echo.job")
    (root / "jobs" / "echo.job").chmod(0o644)
    process(root)
    reason = result_of(root, job_id)["reason"]
    assert reason == f"job type 'echo' is not executable: expected an executable at {root}/jobs/echo.job (chmod +x it)"
