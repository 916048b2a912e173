"""The CLI: exact errors, exit codes and an unchanged queue on bad input."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_job

from miniq.cli.main import main


def invoke(root: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--root", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def queue_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if "jobs" not in p.parts)


def test_enqueue_prints_the_id_and_keeps_arguments(root: Path) -> None:
    code, out, err = invoke(root, "enqueue", "echo", "Title", "This is a message!", "9")
    assert (code, err) == (0, "")
    job_id = out.strip()
    assert (root / "queue" / f"1000-{job_id}.json").exists()


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["echo", "--", "-x", "--y"], ["-x", "--y"]),
        (["echo", "-x", "--y"], ["-x", "--y"]),
        (["echo", "--", "--", "z"], ["--", "z"]),
        (["echo", "a", "--", "b"], ["a", "--", "b"]),
    ],
)
def test_dashes_reach_the_job(root: Path, argv: list[str], expected: list[str]) -> None:
    code, out, _ = invoke(root, "enqueue", *argv)
    assert code == 0
    from miniq.store.queue import Queue

    assert list(Queue(root).read(out.strip()).data["argv"]) == expected


BAD_NAMES = [
    ("nope", "Error: no job type 'nope': expected an executable at {root}/jobs/nope.job"),
    (
        "a/b",
        "Error: invalid job name 'a/b': expected letters, digits and '_.+@-', not starting with a dot, "
        "at most 128 characters (no '/', '..' or control characters)",
    ),
    (
        "..",
        "Error: invalid job name '..': expected letters, digits and '_.+@-', not starting with a dot, "
        "at most 128 characters (no '/', '..' or control characters)",
    ),
    (
        "../echo",
        "Error: invalid job name '../echo': expected letters, digits and '_.+@-', not starting with a dot, "
        "at most 128 characters (no '/', '..' or control characters)",
    ),
    (
        ".echo",
        "Error: invalid job name '.echo': expected letters, digits and '_.+@-', not starting with a dot, "
        "at most 128 characters (no '/', '..' or control characters)",
    ),
    (
        "bell\x07",
        "Error: invalid job name 'bell\\x07': expected letters, digits and '_.+@-', not starting with a dot, "
        "at most 128 characters (no '/', '..' or control characters)",
    ),
    (
        "new\nline",
        "Error: invalid job name 'new\\nline': expected letters, digits and '_.+@-', not starting with a dot, "
        "at most 128 characters (no '/', '..' or control characters)",
    ),
]


@pytest.mark.parametrize("name,message", BAD_NAMES)
def test_bad_job_names(root: Path, name: str, message: str) -> None:
    invoke(root, "enqueue", "echo")  # the queue exists and holds one job
    before = queue_listing(root)
    code, out, err = invoke(root, "enqueue", name, "arg")
    assert (code, out) == (2, "")
    assert err == message.format(root=root) + "\n"
    assert queue_listing(root) == before


def test_not_executable(root: Path) -> None:
    write_job(root, "plain", "#!/bin/sh\n", mode=0o644)
    code, _, err = invoke(root, "enqueue", "plain")
    assert code == 2
    assert err == f"Error: job type 'plain' is not executable: expected an executable at {root}/jobs/plain.job (chmod +x it)\n"
    assert not (root / "queue").exists()


def test_job_type_that_is_a_directory(root: Path) -> None:
    (root / "jobs" / "dir.job").mkdir()
    code, _, err = invoke(root, "enqueue", "dir")
    assert (code, err) == (2, f"Error: no job type 'dir': expected an executable at {root}/jobs/dir.job\n")


@pytest.mark.parametrize(
    "option,value,message",
    [
        ("--memory-max", "lots", "Error: invalid size 'lots': expected a number with an optional K, M, G or T suffix, e.g. 512M"),
        ("--cpu-quota", "0", "Error: invalid CPU quota '0': expected a percentage of one CPU from 1 to 100000, e.g. 50%"),
        ("--timeout", "soon", "Error: invalid duration 'soon': expected e.g. 90s, 10m, 1h30m or 2d"),
        (
            "--tasks-max",
            "1",
            "Error: invalid tasks maximum '1': expected a whole number from 2 (the job and miniq's keeper process) to 4194304",
        ),
        ("--memory-max", "99999999T", "Error: invalid size '99999999T': at most 4E (2^62 bytes)"),
        ("--nice", "40", "Error: invalid niceness '40': expected a whole number from -20 to 19"),
    ],
)
def test_bad_limits(root: Path, option: str, value: str, message: str) -> None:
    code, out, err = invoke(root, "enqueue", option, value, "echo")
    assert (code, out, err) == (2, "", message + "\n")
    assert not (root / "queue").exists()


def test_show_unknown_id(root: Path) -> None:
    code, _, err = invoke(root, "show", "20990101-000000-000000-00000000")
    assert (code, err) == (3, f"Error: no job with id '20990101-000000-000000-00000000' under {root}\n")


def test_root_resolution_order(tmp_path: Path) -> None:
    from miniq.core.manager import Manager, resolve_root

    env = dict(os.environ)
    try:
        os.environ.pop("MINIQ_ROOT", None)
        os.environ.pop("STATE_DIRECTORY", None)
        os.environ["XDG_STATE_HOME"] = str(tmp_path / "state")
        assert resolve_root(Manager.USER) == tmp_path / "state" / "miniq"
        assert resolve_root(Manager.SYSTEM) == Path("/var/lib/miniq")
        os.environ["STATE_DIRECTORY"] = "/var/lib/miniq"
        assert resolve_root(Manager.USER) == Path("/var/lib/miniq")
        os.environ["MINIQ_ROOT"] = str(tmp_path / "r")
        assert resolve_root(Manager.SYSTEM) == tmp_path / "r"
        assert resolve_root(Manager.SYSTEM, str(tmp_path / "x")) == tmp_path / "x"
    finally:
        os.environ.clear()
        os.environ.update(env)


def test_enqueue_does_not_import_pystemd(root: Path) -> None:
    code = (
        "import sys; from miniq.cli.main import main\n"
        "try:\n    main(['--root', sys.argv[1], 'enqueue', 'echo', 'x'])\n"
        "except SystemExit:\n    pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('pystemd', 'lxml', 'psutil', 'configparser', 'subprocess',\n"
        "'ctypes', 'selectors')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_errors_without_permission_are_one_line(root: Path) -> None:
    """Another user acting on a queue that is not theirs: one line, exit 5."""
    import os
    import subprocess
    import sys

    code, out, err = invoke(root, "enqueue", "echo")
    assert code == 0
    if os.geteuid() == 0:  # as root: act as nobody, for whom the queue is closed (0700)
        argv = [sys.executable, "-m", "miniq", "--root", str(root), "cancel", out.strip()]
        proc = subprocess.run(argv, user=65534, group=65534, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
        code, err = proc.returncode, proc.stderr
    else:
        (root / "queue").chmod(0o500)
        try:
            code, _, err = invoke(root, "cancel", out.strip())
        finally:
            (root / "queue").chmod(0o700)
    assert code == 5, err
    assert err.startswith("Error: permission denied") and "Traceback" not in err and len(err.splitlines()) == 2


def test_internal_errors_are_one_line_unless_debugging(root: Path, monkeypatch: object) -> None:

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    from miniq.store.queue import Queue

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("kaboom")

    mp.setattr(Queue, "purge", boom)
    code, _, err = invoke(root, "purge", "--all-finished")
    assert code == 1
    assert err.splitlines() == [
        "Error: internal error in miniq: RuntimeError('kaboom')",
        "Hint: run again with --debug to see where it happened, and report it",
    ]
    result = CliRunner().invoke(main, ["--root", str(root), "--debug", "purge", "--all-finished"])
    assert isinstance(result.exception, RuntimeError)


def test_enqueue_warns_when_nothing_will_run_the_job(tmp_path: Path, monkeypatch: object) -> None:

    mp: pytest.MonkeyPatch = monkeypatch  # type: ignore[assignment]
    mp.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    mp.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    mp.delenv("MINIQ_ROOT", raising=False)
    mp.delenv("STATE_DIRECTORY", raising=False)
    write_job(tmp_path / "state" / "miniq", "echo", "#!/bin/sh\n")
    result = CliRunner().invoke(main, ["--user", "enqueue", "echo"])
    assert result.exit_code == 0 and len(result.stdout.strip()) == 31
    assert result.stderr.startswith("Warning: no miniq-process.path or .timer is enabled in the user manager")
    assert "fix: miniq --user install-units --now" in result.stderr
    wants = tmp_path / "config" / "systemd" / "user" / "paths.target.wants"
    wants.mkdir(parents=True)
    (wants / "miniq-process.path").symlink_to("/dev/null")
    result = CliRunner().invoke(main, ["--user", "enqueue", "echo"])
    assert result.exit_code == 0 and result.stderr == ""


def test_purge_everything_finished(root: Path) -> None:
    code, out, _ = invoke(root, "enqueue", "echo")
    from helpers import processor

    processor(root)[0].run()
    assert invoke(root, "purge", "--older-than", "0") == (0, f"removed {out.strip()}\n", "")
    code, _, err = invoke(root, "purge")
    assert (code, err) == (2, "Error: expected exactly one of --older-than DURATION and --all-finished\n")


def test_a_reader_that_goes_away_ends_the_command_quietly(root: Path) -> None:
    from miniq.store.queue import Queue

    q = Queue(root)
    for i in range(1500):  # far more than a pipe holds
        q.enqueue("echo", [str(i) * 200])
    proc = subprocess.run(
        f"{sys.executable} -m miniq --root {root} list --all --json | head -c 10; echo \" ${{PIPESTATUS[0]}}\"",
        shell=True, executable="/bin/bash", capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )  # fmt: skip
    assert proc.stdout.startswith("[") and proc.stdout.endswith(" 141\n") and proc.stderr == "", (proc.stdout, proc.stderr)


@pytest.mark.parametrize("case", ["empty queue", "root is a file"])
def test_process_starts_without_the_cli_and_answers_as_it(root: Path, tmp_path: Path, case: str) -> None:
    """`miniq process` (what the service runs) imports no click, nor what a
    queue without miniq.conf and type caps does not use (configparser,
    shutil), nor pystemd's lxml, nor threading and socket.py (cold start,
    journal.py); and it says and exits exactly what the same command through
    cli.py does; and the garbage collector, off while it starts (entry.py),
    is on again."""
    target = root if case == "empty queue" else tmp_path / "a-file"
    if case == "root is a file":
        target.write_text("not a directory\n")
    env = dict(os.environ, MINIQ_ROOT=str(target))
    fast = (
        "import sys; from miniq.cli.entry import run\nsys.argv = ['miniq', 'process']\n"
        "try:\n    run()\nfinally:\n"
        "    import gc\n"
        "    print([m for m in ('click', 'configparser', 'shutil', 'lxml', 'threading', 'socket') if m in sys.modules]\n"
        "          + ([] if gc.isenabled() else ['gc off']))"
    )
    slow = "import sys; from miniq.cli.main import main\nmain(['process'], prog_name='miniq')"
    a = subprocess.run([sys.executable, "-c", fast], capture_output=True, text=True, env=env)
    b = subprocess.run([sys.executable, "-c", slow], capture_output=True, text=True, env=env)
    *lines, imported = a.stdout.splitlines()
    # click (with what it imports) only to explain an error
    assert ast.literal_eval(imported) == (["click", "threading"] if case == "root is a file" else [])
    assert (a.returncode, "\n".join(lines), a.stderr) == (b.returncode, b.stdout.rstrip("\n"), b.stderr)
    assert (a.returncode == 0) == (case == "empty queue") and (a.stderr == "") == (case == "empty queue")


def test_every_other_command_runs_with_the_garbage_collector_on() -> None:
    """entry.py turns the collector off while a command starts; a command
    such as `miniq wait` or `miniq logs -f` runs for hours, so it must be on
    again when cli.py runs the command."""
    code = (
        "import gc, sys\nimport miniq.cli.main\nminiq.cli.main.run = lambda: print(gc.isenabled(), 'click' in sys.modules)\n"
        "sys.argv = ['miniq', 'wait', '20990101-000000-000000-00000000']\nfrom miniq.cli.entry import run\nrun()"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "True True\n"


def test_a_command_ends_without_teardown_and_with_every_line_written(root: Path) -> None:
    """cli.exit_now: the interpreter is not torn down (atexit handlers do not
    run), yet every id reaches a pipe and every exit status is kept."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    marker = "import atexit, sys; atexit.register(lambda: sys.stderr.write('torn down\\n')); "
    lines = "".join(f"x{i}\n" for i in range(3000))
    run = [sys.executable, "-c", marker + "from miniq.cli.entry import run; run()", "--root", str(root)]
    proc = subprocess.run([*run, "enqueue", "--stdin", "echo"], input=lines, capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    ids = proc.stdout.splitlines()
    assert len(ids) == 3000 and len(set(ids)) == 3000
    proc = subprocess.run([*run, "show", "20261202-000000-000000-00000000"], capture_output=True, text=True, env=env)
    assert proc.returncode == 3 and proc.stdout == "" and proc.stderr.startswith("Error: no job with id")
    proc = subprocess.run([*run, "enqueue"], capture_output=True, text=True, env=env)  # a usage error: click's own exit
    assert proc.returncode == 2 and "Missing argument 'NAME'" in proc.stderr and "torn down" not in proc.stderr
