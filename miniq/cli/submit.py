"""``miniq enqueue``: one job, a batch from standard input, and waiting for it.
cli.py adds the command to the ``miniq`` group; it parses, calls the
library (queue.py, batch.py, waiting.py) and prints."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..core.errors import BadInput
from ..core.face import say, say_lines
from ..core.limits import LIMITS, Limits
from ..core.manager import Manager
from ..core.schedule import Schedule

if TYPE_CHECKING:
    from .context import Context


def _limit_options(f: Any) -> Any:
    for spec in reversed(LIMITS):
        f = click.option(f"--{spec.key}", spec.attr, metavar="VALUE", help=spec.help)(f)
    return f


def _warn_unprocessed(obj: Context) -> None:
    """Say so when nothing will start the processor for this queue (README)."""
    from ..core.manager import enabled_units

    if obj.explicit_root or enabled_units(obj.manager):
        return
    flag = "--user " if obj.manager is Manager.USER else ""
    say(
        f"Warning: no miniq-process.path or .timer is enabled in the {obj.manager.value} manager, so nothing will run this job; "
        f"fix: miniq {flag}install-units --now (or: systemctl {flag}enable --now miniq-process.timer miniq-process.path)",
        err=True,
    )


@click.command(context_settings={"allow_interspersed_args": False})
@_limit_options
@click.option("--priority", type=click.IntRange(-1000, 1000), default=0, help="Higher runs first (default 0), -1000 to 1000.")
@click.option("--in", "delay", metavar="DURATION", help="Start no sooner than this from now, e.g. 10m.")
@click.option("--at", "at", metavar="TIME", help="Start no sooner than this time, e.g. 18:00 or 2026-12-24T18:00.")
@click.option("--after", multiple=True, metavar="ID", help="Run only after job ID succeeded (repeatable).")
@click.option("--retries", type=click.IntRange(0, 100), default=0, help="Attempts after a failure; backoff 1 s, 2 s, 4 s... at most 1 h.")
@click.option("--unique", is_flag=True, help="Add nothing while a job of the same NAME and ARGS is unfinished (exit 7, its id printed).")
@click.option("--unique-key", metavar="KEY", help="Add nothing while a job with this KEY is unfinished (exit 7, its id printed).")
@click.option("--on-failure", metavar="NAME2", help="When the job fails for good, queue NAME2 with its id (MINIQ_FOLLOWS_* set).")
@click.option("--on-success", metavar="NAME3", help="When the job succeeds, queue NAME3 with its id.")
@click.option("--stdin", "batch", flag_value="shell", help="One job per line of standard input: its ARGS in shell quoting.")
@click.option("--stdin-json", "batch", flag_value="json", help="One job per line of standard input: a JSON object (README).")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job and exit with its status, as miniq wait does.")
@click.option("--logs", is_flag=True, help="With --wait: print the job's output while it runs.")
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def enqueue(
    ctx: click.Context, /, name: str, args: tuple[str, ...], priority: int, delay: str | None, at: str | None,
    after: tuple[str, ...], retries: int, unique: bool, unique_key: str | None, on_failure: str | None, on_success: str | None,
    batch: str | None, wait_: bool, logs: bool, **limits: str | None,
) -> None:  # fmt: skip
    """Queue a run of ROOT/jobs/NAME.job with ARGS and print the job id.

    Options go before NAME; everything after NAME is passed to the job as
    is.  A `--` right after NAME is dropped, so `NAME -- -x` passes `-x`
    (write `NAME -- -- x` to pass a literal `--`).

    With --unique (or --unique-key KEY) no job is added while one with the
    same key is queued, delayed or running: the id of that job is printed
    and the exit code is 7.  --on-failure and --on-success queue a follow-up
    job of another type when this one ends, after its retries.

    --wait waits for the job (with --unique: the job that holds the key) and
    exits with its status, as `miniq wait` does; --logs also prints its
    output as it comes.  --stdin queues one job per line of standard input,
    all or none, durable before any id is printed (README, "Bulk enqueue").

    Example: miniq enqueue --memory-max 512M notify Title "This is a message!" 9

    Example: miniq enqueue --unique --on-failure notify backup /srv

    Example: miniq enqueue --wait --logs build ./src

    Example: find /srv -name '*.raw' | miniq enqueue --stdin convert
    """
    obj: Context = ctx.obj
    by_attr = {spec.attr: spec.key for spec in LIMITS}
    parsed = Limits.parse({by_attr[k]: v for k, v in limits.items()})
    schedule = _schedule(priority, delay, at, after, retries)
    if args[:1] == ("--",):  # `miniq enqueue NAME -- -x`: the -- only separates
        args = args[1:]
    if logs and not wait_:
        raise BadInput("--logs needs --wait: expected miniq enqueue --wait --logs NAME ...")
    if batch:
        _batch(obj, name, args, parsed, schedule, batch == "json", unique, unique_key)
        return
    job_id = _one(obj, name, args, parsed, schedule, unique, unique_key, on_success, on_failure, wait_)
    if wait_:
        _wait(ctx, job_id, logs)


def _one(obj: Context, name: str, args: tuple[str, ...], limits: Limits, schedule: Schedule, unique: bool, unique_key: str | None,
         on_success: str | None, on_failure: str | None, wait_: bool) -> str:  # fmt: skip
    """Queue one job and print its id (or the id of the job holding its key)."""
    from ..store.unique import AlreadyQueued, implicit_key

    if unique and unique_key is not None:
        raise BadInput("--unique and --unique-key both given: expected at most one of them")
    key = implicit_key(name, args) if unique else unique_key
    try:
        job_id = obj.queue.enqueue(name, list(args), limits, schedule, unique=key, on_success=on_success, on_failure=on_failure).id
    except AlreadyQueued as e:
        say(e.job_id)
        say(f"Note: {e.message}", err=True)
        if not wait_:
            raise click.exceptions.Exit(e.exit_code) from None
        return e.job_id
    say(job_id)
    _warn_unprocessed(obj)
    return job_id


def _schedule(priority: int, delay: str | None, at: str | None, after: tuple[str, ...], retries: int) -> Schedule:
    import time

    from ..core.timeparse import parse_at, parse_duration

    if delay and at:
        raise BadInput("--in and --at both given: expected at most one of them")
    not_before = time.time() + parse_duration(delay) if delay else parse_at(at) if at else None
    return Schedule(priority, not_before, after, retries)


def _wait(ctx: click.Context, job_id: str, logs: bool) -> None:
    """``--wait``: exit with the job's status; ``--logs``: its output first (``miniq logs -f``)."""
    from ..store.waiting import wait as wait_for

    sys.stdout.flush()
    if logs:
        group = ctx.parent.command if ctx.parent else None
        command = group.get_command(ctx.parent, "logs") if isinstance(group, click.Group) and ctx.parent else None
        assert command is not None
        ctx.invoke(command, job_id=job_id, follow=True, events=False)
    [record] = wait_for(ctx.obj.queue, [job_id])
    raise click.exceptions.Exit(record.result.wait_status if record.result else 125)


def _batch(obj: Context, name: str, args: tuple[str, ...], limits: Limits, schedule: Schedule, as_json: bool, unique: bool,
           unique_key: str | None) -> None:  # fmt: skip
    """``--stdin`` and ``--stdin-json`` (batch.py)."""
    from ..store.batch import Item, enqueue_batch, parse_lines

    if args or unique or unique_key:
        raise BadInput("--stdin takes NAME only: the arguments (and unique_key, with --stdin-json) come from each line")
    if obj.caller is not None:
        raise BadInput("--stdin does not go through the system queue's helper; run one enqueue per job (or ask root)")
    items: list[Item] = parse_lines(sys.stdin, as_json)
    if not items:
        return
    results = enqueue_batch(obj.queue, name, items, limits, schedule)
    say_lines("".join(f"{job_id}\n" for job_id, _ in results), end="")  # one write, even unbuffered
    _warn_unprocessed(obj)
    skipped = sum(1 for _, added in results if not added)
    if skipped:
        say(f"Note: {skipped} job(s) not added: a job with the same unique key is unfinished (its id printed)", err=True)
        raise click.exceptions.Exit(7)
