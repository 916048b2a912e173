"""The job's process (spawn.py): both gates start it alike.

A job of the processor's own user without a niceness gets the shell gate
(``/bin/sh`` by posix_spawn); one with a niceness (or another user's, as
root: test_users.py and the shared-server tests) gets a fork of the
processor.  Each test runs through the processor on plain processes, once per
gate, and checks what the job sees: its descriptors, signals, session,
directory and environment; a file without ``#!``; a missing interpreter;
and that nothing runs before the gate opens, or at all when it is aborted.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from helpers import ListSink, process, result_of, write_job

from miniq.core.errors import BadInput
from miniq.core.limits import Limits
from miniq.run.spawn import ExecSpec, abort, release, spawn_gated
from miniq.store.queue import Queue

GATES = {"shell gate": Limits(), "fork gate": Limits(nice=5)}


@pytest.fixture(params=list(GATES))
def limits(request: pytest.FixtureRequest) -> Limits:
    return GATES[request.param]


def run_one(root: Path, name: str, body: str, limits: Limits, args: tuple[str, ...] = ()) -> tuple[ListSink, str]:
    write_job(root, name, body)
    job = Queue(root).enqueue(name, list(args), limits=limits)
    sink, _ = process(root)
    return sink, job.id


def lines(sink: ListSink, job_id: str) -> list[str]:
    return [line.decode() for line in sink.output(job_id)]


def test_no_descriptor_of_the_processor_reaches_the_job(root: Path, limits: Limits) -> None:
    # One the processor inherited without close-on-exec, as from a careless parent.
    stray = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(stray, True)
    try:
        sink, job_id = run_one(root, "fds", "#!/bin/sh\nexec /bin/ls -1 /proc/self/fd\n", limits)
        assert os.get_inheritable(stray)  # closed in the child only: the embedding program's own
    finally:
        os.close(stray)
    assert result_of(root, job_id)["outcome"] == "exited"
    assert lines(sink, job_id) == ["0", "1", "2", "3"]  # 3: ls reading the directory


def test_the_job_has_its_own_session_default_signals_and_stdin_from_dev_null(root: Path, limits: Limits) -> None:
    # The job's own mask, read by the job itself (exec: the same process): a
    # shell that forks blocks every signal for a moment, so reading its status
    # from a child of it may catch that moment on a busy machine.
    body = (
        "#!/bin/sh\n"
        "set -- $(cut -d' ' -f1,6 /proc/$$/stat)\n"
        'echo "pid $1 session $2"\n'
        "readlink /proc/$$/fd/0\n"
        "exec grep -E '^Sig(Ign|Blk)' /proc/self/status\n"
    )
    # What a processor may have been given: ignored signals (nohup, a shell's
    # background job) and a blocked one.
    given = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT)}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        sink, job_id = run_one(root, "session", body, limits)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, handler in given.items():
            signal.signal(sig, handler)
    out = lines(sink, job_id)
    pid, session = out[0].split()[1::2]
    assert pid == session  # setsid: the job leads its session
    # glibc's posix_spawn leaves its two internal signals (32 and 33, which
    # no program can catch through glibc) ignored; nothing else is.
    ignored = "0000000180000000" if limits.nice is None else "0000000000000000"
    assert out[2:4] == ["SigBlk:\t0000000000000000", f"SigIgn:\t{ignored}"]
    assert out[1] == os.devnull


def test_the_job_runs_in_the_root_with_only_its_clean_environment(root: Path, limits: Limits) -> None:
    jobs = root / "jobs"
    jobs.mkdir(exist_ok=True)
    (jobs / "env.job").symlink_to("/usr/bin/env")  # no shell between: exactly what it got
    job = Queue(root).enqueue("env", ["-0"], limits=limits)
    sink, _ = process(root)
    names = {entry.split(b"=", 1)[0].decode() for entry in b"".join(sink.output(job.id)).split(b"\0") if entry}
    assert names == {
        "PATH", "LANG", "HOME", "USER", "LOGNAME", "SHELL", "MINIQ_JOB_ID", "MINIQ_JOB_NAME", "MINIQ_ROOT", "MINIQ_ATTEMPT",
    }  # fmt: skip
    sink, job_id = run_one(root, "where", "#!/bin/sh\n/bin/pwd -P\n", limits)
    assert lines(sink, job_id) == [str(root.resolve())]


def test_arguments_reach_the_job_as_they_were_given(root: Path, limits: Limits) -> None:
    args = ("a b", "", "-c", "$HOME", "*", "line\nbreak", "--")
    sink, job_id = run_one(root, "args", '#!/bin/sh\nfor a in "$0" "$@"; do printf "[%s]" "$a"; done\n', limits, args)
    exe = root / "jobs" / "args.job"
    assert "".join(lines(sink, job_id)) == f"[{exe}]" + "".join(f"[{a}]" for a in args).replace("\n", "")


def test_a_job_file_without_a_shebang_runs_under_sh(root: Path, limits: Limits) -> None:
    """As with execvp, cron, at and nq: the kernel cannot run it, /bin/sh does."""
    sink, job_id = run_one(root, "plain", 'echo "plain $1"\n', limits, ("x",))
    assert result_of(root, job_id)["outcome"] == "exited"
    assert lines(sink, job_id) == ["plain x"]


@pytest.mark.parametrize("missing", ["absent", "not executable", "windows line ends"])
def test_a_missing_interpreter_is_not_started_and_named(root: Path, tmp_path: Path, limits: Limits, missing: str) -> None:
    interpreter = tmp_path / "python9"
    first_line = f"#!{interpreter} -u\n"
    named = f"its #! line names {interpreter}, which does not exist"
    if missing == "not executable":
        interpreter.write_text("#!/bin/sh\n")
        named = f"its #! line names {interpreter}, which is not an executable file"
    elif missing == "windows line ends":
        first_line = "#!/bin/sh\r\n"
        named = "its #! line ends with a carriage return (Windows line ends), so it names /bin/sh\\r, which does not exist"
    write_job(root, "py", first_line + "print('ran')\n")
    with pytest.raises(BadInput, match="^" + re.escape(f"job type 'py' cannot start: {named}") + "$"):
        Queue(root).enqueue("py", [], limits=limits)  # the gate says so at once (policy.py)
    write_job(root, "py", "#!/bin/sh\n")
    job = Queue(root).enqueue("py", [], limits=limits)
    write_job(root, "py", first_line + "print('ran')\n")  # broken while it waited: the run gate says so
    sink, summary = process(root)
    assert summary.failed == [job.id]
    result = result_of(root, job.id)
    assert (result["outcome"], result["reason"]) == ("not-started", f"job type 'py' cannot start: {named}")
    assert sink.output(job.id) == []


def test_an_exec_that_fails_anyway_fails_the_job_with_a_reason(root: Path, limits: Limits) -> None:
    """Between the worker's checks and the exec the file can go (or an ELF of
    another machine can be there): the fork gate says why before the job is
    counted as started; the shell gate exits 127 and says why on stderr."""
    spec = ExecSpec(exe=str(root / "gone.job"), argv=(), env={"PATH": "/bin"}, cwd=str(root), limits=limits)
    gated = spawn_gated(spec)
    if limits.nice is None:
        release(gated)
        _, status = os.waitpid(gated.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 127
        err = os.read(gated.stderr, 4096).decode()
        assert f"{root}/gone.job" in err and "not found" in err, err
        os.close(gated.stdout)
        os.close(gated.stderr)
    else:
        from miniq.run.spawn import StartFailed

        with pytest.raises(StartFailed, match=f"No such file or directory \\({root}/gone.job\\)"):
            release(gated)


def test_nothing_runs_before_the_gate_opens_nor_after_an_abort(root: Path, limits: Limits) -> None:
    marker = root / "ran"
    exe = write_job(root, "mark", f"#!/bin/sh\necho $$ > {marker}\n")
    spec = ExecSpec(exe=str(exe), argv=(), env={"PATH": "/bin"}, cwd=str(root), limits=limits)
    held = spawn_gated(spec)
    time.sleep(0.3)
    assert not marker.exists() and os.waitpid(held.pid, os.WNOHANG) == (0, 0)  # waiting at the gate
    assert abort(held) == ""
    assert not marker.exists()
    opened = spawn_gated(spec)
    release(opened)
    _, status = os.waitpid(opened.pid, 0)
    assert status == 0 and marker.read_text() == f"{opened.pid}\n"  # the gated process became the job
    os.close(opened.stdout)
    os.close(opened.stderr)


def test_doctor_names_a_job_type_whose_interpreter_is_missing(root: Path, tmp_path: Path) -> None:
    from miniq.cli.doctor import _job_types

    write_job(root, "ok", "#!/bin/sh\ntrue\n")
    write_job(root, "py", f"#!{tmp_path}/python9\nprint('ran')\n")
    write_job(root, "dos", "#!/bin/sh\r\ntrue\r\n")
    found = {(f.ok, f.text, f.fix) for f in _job_types(Queue(root))}
    assert found == {
        (False, "job type 'dos' cannot start: its #! line ends with a carriage return (Windows line ends), so it names "
                "/bin/sh\\r, which does not exist", f"sed -i 's/\\r$//' {root}/jobs/dos.job"),
        (False, f"job type 'py' cannot start: its #! line names {tmp_path}/python9, which does not exist",
                f"install it, or name another in the first line of {root}/jobs/py.job"),
    }  # fmt: skip
    (root / "jobs" / "py.job").unlink()
    (root / "jobs" / "dos.job").unlink()
    types = len(list((root / "jobs").glob("*.job")))  # "ok" and the fixture's own
    assert [(f.ok, f.text) for f in _job_types(Queue(root))] == [(True, f"{types} job type(s), all usable")]


def test_a_gate_its_processor_never_opens_runs_nothing(root: Path, limits: Limits) -> None:
    """The processor dies (its end of the gate closes unwritten) while the
    child waits for its scope: the child exits and the job never runs."""
    marker = root / "ran"
    exe = write_job(root, "mark", f"#!/bin/sh\necho ran > {marker}\n")
    gated = spawn_gated(ExecSpec(exe=str(exe), argv=(), env={"PATH": "/bin"}, cwd=str(root), limits=limits))
    os.close(gated.gate)
    _, status = os.waitpid(gated.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 127 and not marker.exists()
    for fd in (gated.stdout, gated.stderr, *([] if gated.report is None else [gated.report])):
        os.close(fd)
