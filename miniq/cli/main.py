"""The ``miniq`` command: parses, calls the library, prints.

Every error reaches the user as one ``Error: ...`` line (and sometimes a
``Hint: ...``) with a documented exit code; tracebacks only with ``--debug``.
Commands import what they need when they run, so that ``miniq enqueue``
starts fast.

Exit codes (stable, documented in README.md):
  0  success
  1  an error miniq could not recover from (message on stderr)
  2  bad input: invalid job name, unknown job type, invalid limit; nothing written
  3  no job with that id
  4  systemd or D-Bus unreachable
  5  not permitted: another user's job, or a queue closed to you
  6  busy: too many requests open at once with the system queue's helper
  7  not added: a job with the same --unique key is unfinished (its id is printed)
  141  the reader of the output went away (``miniq list | head``), as for a command killed by SIGPIPE
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from ..core.errors import BadInput, MiniqError
from ..core.face import say, say_bytes, say_json, say_lines
from ..core.hangup import ClientGone
from ..core.manager import Manager
from ..core.version import __version__
from .context import Context

if TYPE_CHECKING:
    pass


class MiniqGroup(click.Group):
    """Turns errors into ``Error: ...`` and an exit code; lists aliases once."""

    aliases = {"status": "list"}

    def invoke(self, ctx: click.Context) -> Any:
        try:
            if ctx.obj is None and not ctx.resilient_parsing:
                manager = ctx.params.get("manager")
                context = Context(Manager(manager) if manager else None, ctx.params.get("root"))
                if context.through_helper:
                    from ..serve.helper import call

                    # The command and its arguments, as the user gave them, go to the helper.
                    protected = ctx.__dict__.get("_protected_args")
                    if protected is None:
                        protected = ctx.protected_args  # click < 8.2
                    ctx.exit(call([*protected, *ctx.args]))
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, ClientGone):
            raise  # ClientGone: in the system queue's helper, nobody is left to tell
        except KeyboardInterrupt:
            ctx.exit(130)
        except BrokenPipeError:
            if getattr(ctx.obj, "caller", None) is not None:
                raise  # in the helper: the client went away, server.py handles it
            # `miniq stats | head`: the reader went away; end quietly, as if killed by SIGPIPE.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except Exception as e:  # noqa: BLE001 - the CLI edge: one line, a documented code
            if ctx.meta.get("miniq.debug"):
                raise
            ctx.exit(report(e))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in super().list_commands(ctx) if name not in self.aliases]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


def report(e: BaseException) -> int:
    """Say ``e`` on standard error in one line (and a hint); its exit code."""
    message, hint, code = _explain(e)
    say(f"Error: {message}", err=True)
    if hint:
        say(f"Hint: {hint}", err=True)
    return code


def _explain(e: BaseException) -> tuple[str, str | None, int]:
    """(message, hint, exit code) for an error at the command's edge."""
    if isinstance(e, MiniqError):
        return e.message, e.hint, e.exit_code
    if isinstance(e, PermissionError):
        where = f": {e.filename}" if e.filename else ""
        return f"permission denied{where}", "this queue belongs to another user; use your own (--user) or ask its owner", 5
    if isinstance(e, OSError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror or e}{where}", None, 1
    return f"internal error in miniq: {e!r}", "run again with --debug to see where it happened, and report it", 1


@click.group(cls=MiniqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="miniq")
# Flag values are plain strings: click 8.1 (Debian 12) turns other objects into strings.
@click.option("--user", "manager", flag_value="user", help="Use your own queue and your user manager.")
@click.option("--system", "manager", flag_value="system", help="Use the system queue (/var/lib/miniq) and the system manager.")
@click.option("--root", metavar="DIR", help="Queue root directory (default: $MINIQ_ROOT, else the manager's default).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, manager: str | None, root: str | None, debug: bool) -> None:
    """miniq: a daemonless job queue run by systemd.

    Jobs are executables in ROOT/jobs/NAME.job; `miniq enqueue NAME ARGS...`
    queues one, and the miniq-process units run it in its own scope, with
    its output in the journal.  `miniq status` is another name for `miniq list`.

    Example: miniq enqueue backup /srv/data
    """
    ctx.meta["miniq.debug"] = debug
    # Inside the system queue's helper, the object passed in is the caller (server.py).
    caller = getattr(ctx.obj, "caller", ctx.obj)
    ctx.obj = Context(Manager(manager) if manager else None, root, caller)


@main.command()
@click.option("--parallel", type=click.IntRange(1, 256), help="Jobs to run at once (default: [processor] parallel in miniq.conf, else 1).")
@click.option("--max-jobs", type=click.IntRange(1), help="Stop after claiming this many jobs (default: when the queue is empty).")
@click.pass_obj
def process(obj: Context, parallel: int | None, max_jobs: int | None) -> None:
    """Run queued jobs until the queue is empty (what miniq-process.service runs).

    Each job runs in its own transient scope; its output goes to the journal.

    Example: systemctl --user start miniq-process.service
    """
    from ..run.processor import Processor

    say(Processor(obj.queue, obj.manager, parallel=parallel, max_jobs=max_jobs).run().describe())


STATE_CHOICES = ["running", "queued", "delayed", "done", "failed"]  # State labels; job.py is imported on use


@main.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATE_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--name", help="Only jobs of this job type.")
@click.option("--all", "show_all", is_flag=True, help="Every job, not only the first 20 queued, delayed and finished.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (shape in README); streams with --all.")
@click.option("--limit", type=click.IntRange(1, 100000), help="At most this many of each group (default 20).")
@click.option("--offset", type=click.IntRange(0), default=0, help="Skip this many of each group first (finished: the newest): a page.")
@click.option("--owner", metavar="USER", help="Only the jobs of this user (a name or a uid).")
@click.pass_obj
def list_(
    obj: Context,
    states: tuple[str, ...],
    name: str | None,
    show_all: bool,
    as_json: bool,
    limit: int | None,
    offset: int,
    owner: str | None,
) -> None:
    """List running jobs, the next queued and delayed ones, and the newest finished.

    Without --all it shows at most 20 queued, 20 delayed and the 20 most
    recently submitted finished jobs (--limit N), and says how many more
    there are; --offset K skips the first K of each, for the next page.
    WHEN is relative to now: "queued 5m ago", "due in 2h", "ended 10s ago".

    Example: miniq list --state failed --name backup
    """
    from ..core.job import State
    from ..store.listing import iterate, row

    if show_all and (limit is not None or offset):
        raise BadInput("--all shows every job: it takes no --limit or --offset")
    chosen = [State.by_label(s) for s in states] if states else list(State)
    uid = None if owner is None else _uid_of(owner)
    limit = None if show_all else limit or 20
    items = iterate(obj.queue, chosen, name, limit, ordered=not (as_json and show_all), offset=offset, owner=uid)
    if as_json:
        say_json("[", end="")
        first = True
        for item in items:
            if isinstance(item, tuple):
                continue
            say_json(("\n" if first else ",\n") + json.dumps(row(item)), end="")
            first = False
        say_json("\n]" if not first else "]")
        return
    from ..store.pause import pauses
    from .table import render

    for held in pauses(obj.queue.layout):
        say(f"paused: {held.what} (by {held.by} on {held.host} at {held.at}); undo with: miniq resume")
    say_lines(render(items))


def _uid_of(user: str) -> int:
    import pwd

    try:
        return int(user) if user.isascii() and user.isdigit() else pwd.getpwnam(user).pw_uid
    except (KeyError, ValueError):
        from ..core.face import visible

        raise BadInput(f"no user '{visible(user)[:64]}' on this host") from None


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the stored record as JSON.")
@click.pass_obj
def show(obj: Context, job_id: str, as_json: bool) -> None:
    """Show everything recorded about job ID: arguments, limits, outcome, attempts.

    Example: miniq show --json 20261128-022719-123456-1a2b3c4d
    """
    record = obj.queue.read(job_id)
    if as_json:
        say_json(json.dumps(record.shown(), indent=2, sort_keys=True))
        return
    from ..store.pause import pauses
    from .table import describe_record

    say_lines(describe_record(record))
    if not record.finished:
        for held in pauses(obj.queue.layout):
            if held.name in (None, record.name):
                say(f"{'paused:':12} {held.what}, by {held.by} at {held.at}; no new job of it starts until miniq resume")


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", "limit", metavar="DURATION", help="Give up after this long (exit 75).")
@click.pass_obj
def wait(obj: Context, job_ids: tuple[str, ...], limit: str | None) -> None:
    """Wait until the jobs finish; exit with the first failing job's status.

    The status is the job's exit code; 128+N if killed by signal N; 124 if
    stopped at its time limit; 137 if killed for memory; 130 if cancelled;
    125 if it never ran (not started, rejected, dependency failed); 126 if
    its runs were interrupted max-interruptions times; 75 if --timeout
    expired first.

    Example: miniq wait $(miniq enqueue backup /srv) && echo backed up
    """
    from ..core.result import WAIT_GAVE_UP
    from ..core.timeparse import parse_duration
    from ..store.waiting import wait as wait_for

    try:
        records = wait_for(obj.queue, list(job_ids), timeout=parse_duration(limit) if limit else None)
    except TimeoutError:
        say(f"Error: jobs still not finished after {limit}", err=True)
        raise click.exceptions.Exit(WAIT_GAVE_UP) from None
    for record in records:
        status = record.result.wait_status if record.result else 125
        if status:
            raise click.exceptions.Exit(status)


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--no-wait", is_flag=True, help="Return once a running job was asked to stop.")
@click.pass_obj
def cancel(obj: Context, job_ids: tuple[str, ...], no_wait: bool) -> None:
    """Cancel jobs: queued or delayed ones never run, running ones are stopped.

    A running job's scope is stopped by its processor within a second, on
    whichever machine it runs; the job is recorded as cancelled.  A job whose
    processor is gone is cancelled as soon as its claim may be taken over.

    Example: miniq cancel 20261128-022719-123456-1a2b3c4d
    """
    from ..core.job import State
    from ..store.waiting import wait as wait_for

    for job_id in job_ids:
        state = obj.queue.cancel(job_id)
        if state is State.RUNNING and not no_wait:
            try:
                wait_for(obj.queue, [job_id], timeout=60)
            except TimeoutError:
                raise MiniqError(
                    f"job {job_id} was asked to stop but is still running after 60 s",
                    hint=f"if its host is gone, it is cancelled when its lease expires; see: miniq show {job_id}",
                ) from None
        note = " (stop requested)" if no_wait and state is State.RUNNING else ""
        say(f"cancelled {job_id} (was {state.label}){note}")


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.pass_obj
def retry(obj: Context, job_ids: tuple[str, ...]) -> None:
    """Queue failed or cancelled jobs again, with the same id and arguments.

    Example: miniq retry 20261128-022719-123456-1a2b3c4d
    """
    for job_id in job_ids:
        obj.queue.retry(job_id)
        say(job_id)


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--force", is_flag=True, help="Even if its processor's lease is still live (you know its host is gone).")
@click.pass_obj
def requeue(obj: Context, job_id: str, force: bool) -> None:
    """Queue a running job again at once whose processor is gone.

    A job held by a processor that died, or whose host stopped renewing its
    lease, is taken over automatically; this does it now.

    Example: miniq requeue 20261128-022719-123456-1a2b3c4d
    """
    path = obj.queue.requeue(job_id, force=force)
    say(f"{job_id} is now {path.parent.name}")


@main.command()
@click.option("--older-than", metavar="DURATION", help="Remove records of jobs that ended at least this long ago, e.g. 7d (0 for all).")
@click.option("--all-finished", is_flag=True, help="Remove the records of every finished job.")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.pass_obj
def purge(obj: Context, older_than: str | None, all_finished: bool, dry_run: bool) -> None:
    """Remove records of finished jobs (done and failed).

    Example: miniq purge --older-than 7d --dry-run
    """
    from ..core.timeparse import parse_duration

    if (older_than is None) == (not all_finished):
        raise BadInput("expected exactly one of --older-than DURATION and --all-finished")
    seconds = 0.0 if all_finished else parse_duration(older_than or "", allow_zero=True)
    for job_id in obj.queue.purge(seconds, dry_run):
        say(f"{'would remove' if dry_run else 'removed'} {job_id}")


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Follow a running job's output until it ends.")
@click.option("--events", is_flag=True, help="Also print miniq's start and finish lines.")
@click.pass_obj
def logs(obj: Context, job_id: str, follow: bool, events: bool) -> None:
    """Print the output job ID wrote, from the journal.

    Example: miniq logs -f 20261128-022719-123456-1a2b3c4d
    """
    from ..systemd.logs import access_problem, job_output, trusted_matches

    record = obj.queue.read(job_id)
    trusted = trusted_matches(job_id, obj.manager, record.owner, os.stat(obj.root).st_uid)

    pending = [b""]

    def write(data: bytes) -> None:
        # A line cut into several entries is shown whole, so that a character
        # cut in two is shown as one (face.py).
        pending[0] += data
        if data.endswith(b"\n"):
            say_bytes(pending[0])
            pending[0] = b""

    seen = job_output(job_id, follow, record.finished, write, lambda text: say(text, err=True), events=events, trusted=trusted)
    if pending[0]:
        say_bytes(pending[0])
    printed = record.result.output_lines if record.result else None
    if seen.lines == 0 and (printed or not record.finished):
        problem = access_problem()
        if problem:
            raise MiniqError(f"cannot show the output of job {job_id}: {problem}")


@main.command()
@click.pass_obj
def where(obj: Context) -> None:
    """Print the root of the queue this command means (job types are in its jobs/).

    Example: ls "$(miniq where)/jobs"
    """
    say(str(obj.root))


@main.command()
@click.pass_obj
def doctor(obj: Context) -> None:
    """Check the installation and the queue; say what is wrong and how to fix it.

    Exits 1 when it found a problem.

    Example: miniq --user doctor
    """
    from .doctor import check

    problems = 0
    for finding in check(obj.queue, obj.manager):
        if finding.ok:
            say(f"ok: {finding.text}")
        else:
            problems += 1
            say(f"problem: {finding.text}")
            say(f"  fix: {finding.fix}")
    if problems:
        raise click.exceptions.Exit(1)


@main.command(hidden=True)
@click.pass_obj
def serve(obj: Context) -> None:
    """Answer users' requests to the system queue (what miniq-api.service runs).

    It takes the listening socket from systemd (socket activation), answers
    every connection in a thread of its own, and exits when idle; the caller
    of each connection is who the kernel says.

    Example: systemctl enable --now miniq-api.socket
    """
    from ..serve.server import serve as answer

    raise click.exceptions.Exit(answer(obj.root, main))


from .control import every, install_units, pause, resume, stats, uninstall_units  # noqa: E402 - they need only click
from .submit import enqueue  # noqa: E402

for _command in (enqueue, pause, resume, every, stats, install_units, uninstall_units):
    main.add_command(_command)


def run() -> NoReturn:
    try:
        main(prog_name="miniq")
    except SystemExit as e:
        exit_now(e.code)
    exit_now(0)


def exit_now(code: str | int | None) -> NoReturn:
    """Exit with ``code`` (as ``sys.exit`` takes it) without tearing the
    interpreter down, as mypy does: a command's exit is its caller's wait
    (``enqueue --wait`` in a script), and freeing every module of a finished
    command is 5-20 ms here.  Only the main thread may be left, and only
    standard output and error hold unwritten data: miniq's own files are
    written and closed before a command returns (files.py)."""
    import threading

    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        say(code, err=True)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with that descriptor closed
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 120  # what the interpreter's own exit says when stdout cannot be written
    os._exit(status & 0xFF)
