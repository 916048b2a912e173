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
from .errors import MiniqError
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
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def enqueue(obj: Context, /, name: str, args: tuple[str, ...], **limits: str | None) -> None:
    """Queue a run of ROOT/jobs/NAME.job with ARGS and print the job id.

    Options go before NAME; everything after NAME is passed to the job as
    is.  A `--` right after NAME is dropped, so `NAME -- -x` passes `-x`
    (write `NAME -- -- x` to pass a literal `--`).

    Example: miniq enqueue --memory-max 512M notify Title "This is a message!" 9
    """
    parsed = Limits.parse({k.replace("_", "-"): v for k, v in limits.items()})
    if args[:1] == ("--",):  # `miniq enqueue NAME -- -x`: the -- only separates
        args = args[1:]
    job = obj.queue.enqueue(name, list(args), parsed)
    click.echo(job.id)


@main.command()
@click.pass_obj
def process(obj: Context) -> None:
    """Run queued jobs until the queue is empty (what miniq-process.service runs).

    Each job runs in its own transient scope; its output goes to the journal.

    Example: systemctl --user start miniq-process.service
    """
    from .processor import Processor

    summary = Processor(obj.queue, obj.manager).run()
    total = len(summary.succeeded) + len(summary.failed) + len(summary.rejected)
    click.echo(
        f"processed {total} job(s): {len(summary.succeeded)} succeeded, {len(summary.failed)} failed, "
        f"{len(summary.rejected)} rejected, {len(summary.recovered)} recovered"
    )


@main.command()
@click.argument("job_id", metavar="ID")
@click.pass_obj
def show(obj: Context, job_id: str) -> None:
    """Print everything recorded about job ID, as JSON.

    Example: miniq show 20261128-022719-123456-1a2b3c4d
    """
    click.echo(json.dumps(obj.queue.record(job_id), indent=2, sort_keys=True))


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
