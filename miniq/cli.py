"""The ``miniq`` command: parses, calls the library, prints.

Exit codes (stable, documented in README.md):
  0  success
  1  an error miniq could not recover from (message on stderr)
  2  bad input: invalid job name, unknown job type, invalid limit; nothing written
  3  no job with that id
  4  systemd or D-Bus unreachable
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .errors import BadInput, MiniqError
from .job import State
from .limits import Limits
from .queue import Queue
from .settings import Manager, detect_manager, resolve_root


class Context:
    """What the global options chose: the manager and the queue root."""

    def __init__(self, manager: Manager | None, root: str | None) -> None:
        self.manager = manager or detect_manager()
        self.root = resolve_root(self.manager, root)
        self.queue = Queue(self.root)


class MiniqGroup(click.Group):
    """Turns MiniqError into ``Error: ...`` and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MiniqError as e:
            if ctx.meta.get("miniq.debug"):
                raise
            click.echo(f"Error: {e.message}", err=True)
            if e.hint:
                click.echo(f"Hint: {e.hint}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=MiniqGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="miniq")
@click.option("--user", "manager", flag_value=Manager.USER, help="Use your own queue and your user manager.")
@click.option("--system", "manager", flag_value=Manager.SYSTEM, help="Use the system queue (/var/lib/miniq) and the system manager.")
@click.option("--root", metavar="DIR", help="Queue root directory (default: $MINIQ_ROOT, else the manager's default).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, manager: Manager | None, root: str | None, debug: bool) -> None:
    """miniq: a daemonless job queue run by systemd.

    Jobs are executables in ROOT/jobs/NAME.job; `miniq enqueue NAME ARGS...`
    queues one, and the miniq-process units run it in its own scope, with
    its output in the journal.

    Example: miniq enqueue backup /srv/data
    """
    ctx.meta["miniq.debug"] = debug
    ctx.obj = Context(manager, root)


def _limit_options(f: Any) -> Any:
    for name, help_text in reversed(
        [
            ("--memory-max", "Memory limit (MemoryMax=), e.g. 512M or 2G."),
            ("--cpu-quota", "CPU limit in percent of one CPU (CPUQuota=), e.g. 50%."),
            ("--tasks-max", "Maximum processes and threads (TasksMax=), e.g. 64."),
            ("--timeout", "Wall-clock limit; the job is stopped after it, e.g. 10m."),
            ("--nice", "Niceness of the job, -20 to 19."),
        ]
    ):
        f = click.option(name, metavar="VALUE", help=help_text)(f)
    return f


@main.command(context_settings={"allow_interspersed_args": False})
@_limit_options
@click.option("--priority", type=click.IntRange(-1000, 1000), default=0, help="Higher runs first (default 0), -1000 to 1000.")
@click.option("--in", "delay", metavar="DURATION", help="Start no sooner than this from now, e.g. 10m.")
@click.option("--at", "at", metavar="TIME", help="Start no sooner than this time, e.g. 18:00 or 2026-12-24T18:00.")
@click.option("--after", multiple=True, metavar="ID", help="Run only after job ID succeeded (repeatable).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, help="Attempts after a failure; backoff 1 s, 2 s, 4 s... at most 1 h.")
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def enqueue(
    obj: Context, /, name: str, args: tuple[str, ...], priority: int, delay: str | None, at: str | None,
    after: tuple[str, ...], retries: int, **limits: str | None,
) -> None:  # fmt: skip
    """Queue a run of ROOT/jobs/NAME.job with ARGS and print the job id.

    Options go before NAME; everything after NAME is passed to the job as
    is.  A `--` right after NAME is dropped, so `NAME -- -x` passes `-x`
    (write `NAME -- -- x` to pass a literal `--`).

    Example: miniq enqueue --memory-max 512M notify Title "This is a message!" 9
    """
    import time

    from .job import Schedule, parse_at
    from .limits import parse_duration

    parsed = Limits.parse({k.replace("_", "-"): v for k, v in limits.items()})
    if delay and at:
        raise BadInput("--in and --at both given: expected at most one of them")
    not_before = time.time() + parse_duration(delay) if delay else parse_at(at) if at else None
    if args[:1] == ("--",):  # `miniq enqueue NAME -- -x`: the -- only separates
        args = args[1:]
    job = obj.queue.enqueue(name, list(args), parsed, Schedule(priority, not_before, after, retries))
    click.echo(job.id)


@main.command()
@click.option("--parallel", type=click.IntRange(1, 256), help="Jobs to run at once (default: [processor] parallel in miniq.conf, else 1).")
@click.pass_obj
def process(obj: Context, parallel: int | None) -> None:
    """Run queued jobs until the queue is empty (what miniq-process.service runs).

    Each job runs in its own transient scope; its output goes to the journal.

    Example: systemctl --user start miniq-process.service
    """
    from .processor import Processor

    summary = Processor(obj.queue, obj.manager, parallel=parallel).run()
    total = len(summary.succeeded) + len(summary.failed) + len(summary.rejected)
    click.echo(
        f"processed {total} job(s): {len(summary.succeeded)} succeeded, {len(summary.failed)} failed, "
        f"{len(summary.rejected)} rejected, {len(summary.retrying)} to retry, {len(summary.recovered)} recovered"
    )


STATE_CHOICES = [s.label for s in State]


@main.command("list")
@click.option("--state", "states", multiple=True, type=click.Choice(STATE_CHOICES), help="Only jobs in this state (repeatable).")
@click.option("--name", help="Only jobs of this job type.")
@click.option("--all", "show_all", is_flag=True, help="All finished jobs, not only the 20 most recent.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (shape in README).")
@click.pass_obj
def list_(obj: Context, states: tuple[str, ...], name: str | None, show_all: bool, as_json: bool) -> None:
    """List running, queued and delayed jobs, and recently finished ones (alias: status).

    Example: miniq list --state failed --name backup
    """
    from .listing import rows

    chosen = [s for s in State if s.label in states] if states else list(State)
    found = rows(obj.queue, chosen, name, None if show_all else 20)
    if as_json:
        click.echo(json.dumps(found, indent=1))
        return
    click.echo(_table(found))


def _table(found: list[dict[str, Any]]) -> str:
    import shlex
    import shutil

    from .listing import age

    width = shutil.get_terminal_size((100, 24)).columns
    lines = [("ID", "STATE", "NAME", "WHEN", "RESULT", "ARGS")]
    for r in found:
        when = age(r["ended"]) if r["ended"] else age(r["not_before"]) if r["not_before"] else age(r["submitted"])
        result = "" if not r["outcome"] else f"exit {r['exit_code']}" if r["outcome"] == "exited" else r["outcome"]
        lines.append((r["id"], r["state"], r["name"] or "?", when, result, shlex.join(r["argv"] or [])))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for line in lines:
        text = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:5])) + "  " + line[5]
        out.append(text if len(text) <= width else text[: max(width - 1, 0)] + "…")
    return "\n".join(out)


main.add_command(list_, "status")


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the stored record as JSON.")
@click.pass_obj
def show(obj: Context, job_id: str, as_json: bool) -> None:
    """Show everything recorded about job ID: arguments, limits, outcome, attempts.

    Example: miniq show --json 20261128-022719-123456-1a2b3c4d
    """
    record = obj.queue.record(job_id)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
        return
    from .listing import row
    from .processor import describe

    r = row(record)
    for key in ("id", "name", "state", "argv", "submitted", "priority", "not_before", "after", "retries"):
        if r[key] not in (None, [], 0) or key in ("id", "name", "state", "argv"):
            click.echo(f"{key + ':':12} {r[key]}")
    if record.get("limits"):
        click.echo(f"{'limits:':12} {record['limits']}")
    for n, attempt in enumerate(record.get("attempts", []), 1):
        click.echo(f"attempt {n}:   {describe(attempt)} ({attempt.get('ended', '')})")
    result = record.get("result")
    if result:
        for key in ("outcome", "exit_code", "signal", "reason", "started", "ended", "duration", "host", "unit",
                    "cpu_usec", "memory_peak", "max_rss"):  # fmt: skip
            if result.get(key) is not None:
                click.echo(f"{key + ':':12} {result[key]}")


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--timeout", "limit", metavar="DURATION", help="Give up after this long (exit 1).")
@click.pass_obj
def wait(obj: Context, job_ids: tuple[str, ...], limit: str | None) -> None:
    """Wait until the jobs finish; exit with the first failing job's status.

    The status is the job's exit code; 128+N if killed by signal N; 124 if
    stopped at its time limit; 137 if killed for memory; 130 if cancelled;
    125 if it never ran (not started, rejected, dependency failed).

    Example: miniq wait $(miniq enqueue backup /srv) && echo backed up
    """
    from .limits import parse_duration
    from .listing import exit_status
    from .listing import wait as wait_for

    try:
        records = wait_for(obj.queue, list(job_ids), timeout=parse_duration(limit) if limit else None)
    except TimeoutError:
        raise MiniqError(f"jobs still not finished after {limit}") from None
    for record in records:
        status = exit_status(record)
        if status:
            raise click.exceptions.Exit(status)


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--no-wait", is_flag=True, help="Return once a running job was asked to stop.")
@click.pass_obj
def cancel(obj: Context, job_ids: tuple[str, ...], no_wait: bool) -> None:
    """Cancel jobs: queued or delayed ones never run, running ones are stopped.

    A running job's scope is stopped by its processor within a second; the
    job is recorded as cancelled.

    Example: miniq cancel 20261128-022719-123456-1a2b3c4d
    """
    from .listing import wait as wait_for
    from .queue import claimer_id

    for job_id in job_ids:
        state = obj.queue.cancel(job_id, claimer_id())
        if state is State.RUNNING and not no_wait:
            try:
                wait_for(obj.queue, [job_id], timeout=60)
            except TimeoutError:
                raise MiniqError(f"job {job_id} was asked to stop but is still running after 60 s") from None
        note = " (stop requested)" if no_wait and state is State.RUNNING else ""
        click.echo(f"cancelled {job_id} (was {state.label}){note}")


@main.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True)
@click.pass_obj
def retry(obj: Context, job_ids: tuple[str, ...]) -> None:
    """Queue failed or cancelled jobs again, with the same id and arguments.

    Example: miniq retry 20261128-022719-123456-1a2b3c4d
    """
    for job_id in job_ids:
        obj.queue.retry(job_id)
        click.echo(job_id)


@main.command()
@click.option("--older-than", required=True, metavar="DURATION", help="Remove records of jobs that ended longer ago, e.g. 7d.")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.pass_obj
def purge(obj: Context, older_than: str, dry_run: bool) -> None:
    """Remove records of finished jobs (done and failed) older than a duration.

    Example: miniq purge --older-than 7d --dry-run
    """
    from .limits import parse_duration

    for job_id in obj.queue.purge(parse_duration(older_than), dry_run):
        click.echo(f"{'would remove' if dry_run else 'removed'} {job_id}")


@main.command()
@click.argument("job_id", metavar="ID")
@click.option("-f", "--follow", is_flag=True, help="Follow a running job's output until it ends.")
@click.option("--events", is_flag=True, help="Also print miniq's start and finish lines.")
@click.pass_obj
def logs(obj: Context, job_id: str, follow: bool, events: bool) -> None:
    """Print the output job ID wrote, from the journal.

    Example: miniq logs -f 20261128-022719-123456-1a2b3c4d
    """
    from .journal import job_output

    state, _ = obj.queue.find(job_id)

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    job_output(job_id, follow, state.is_final, write, events=events)


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
            click.echo(f"ok: {finding.text}")
        else:
            problems += 1
            click.echo(f"problem: {finding.text}")
            click.echo(f"  fix: {finding.fix}")
    if problems:
        raise click.exceptions.Exit(1)


@main.command("install-units")
@click.option("--now", is_flag=True, help="Also enable and start miniq-process.timer and miniq-process.path.")
@click.pass_obj
def install_units(obj: Context, now: bool) -> None:
    """Install the units for this miniq (user units with --user, system units with --system).

    ExecStart= points at this installation, so a venv or ~/.local works.
    The queue root (the default, --root or MINIQ_ROOT) is written into the
    units, so they and this command always mean the same queue.

    Example: miniq --user install-units --now
    """
    from .units import install

    manager = obj.manager
    for path in install(manager, obj.root, now):
        click.echo(f"installed {path}")
    if not now:
        flag = " --user" if manager is Manager.USER else ""
        click.echo(f"enable with: systemctl{flag} enable --now miniq-process.timer miniq-process.path")


@main.command("uninstall-units")
@click.pass_obj
def uninstall_units(obj: Context) -> None:
    """Stop, disable and remove the units that install-units wrote; queued jobs stay.

    Example: miniq --user uninstall-units
    """
    from .units import uninstall

    for path in uninstall(obj.manager):
        click.echo(f"removed {path}")


def run() -> None:
    main(prog_name="miniq")
