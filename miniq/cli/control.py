"""Commands on the queue as a whole: ``pause``, ``resume``, ``every``
(recurring jobs), ``stats``, and setting up its units (``install-units``,
``uninstall-units``).  cli.py adds them to the ``miniq`` group; like every
command they parse, call the library and print."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ..core.errors import BadInput
from ..core.face import say, say_json

if TYPE_CHECKING:
    from .context import Context


@click.command()
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.pass_obj
def pause(obj: Context, names: tuple[str, ...]) -> None:
    """Start no new job (of job types NAME..., or any); running jobs finish.

    Queued jobs of a paused type are held, and run after `miniq resume`, in
    their order; jobs of other types pass them.  The pause is stored in the
    queue root: it survives reboots and holds on every machine sharing it.
    In the system queue only root may pause.

    Example: miniq pause backup
    """
    from ..store.pause import pause as make

    obj.queue.ensure_layout()
    for made in make(obj.queue.layout, list(names)):
        say(f"paused {made.what}: no new job of it starts until miniq resume{' ' + made.name if made.name else ''}")


@click.command()
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.pass_obj
def resume(obj: Context, names: tuple[str, ...]) -> None:
    """Undo pause: of job types NAME..., or every pause without NAME.

    Held jobs go back to the queue at once on this machine; other machines
    sharing the root see it at their next timer run (a minute at most).

    Example: miniq resume
    """
    from ..store.pause import ALL, paused_names
    from ..store.pause import resume as undo

    layout = obj.queue.layout
    done = undo(layout, list(names))
    for entry in done:
        say("resumed the whole queue" if entry == ALL else f"resumed job type '{entry}'")
    if not done:
        say("nothing to resume: " + ("those job types are not paused" if names else "nothing is paused"))
    if names and ALL in paused_names(layout):
        say("Note: the whole queue is still paused; resume it with: miniq resume", err=True)


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("calendar", required=False)
@click.argument("name", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("--list", "show", is_flag=True, help="Show every schedule of this queue with its next and last run.")
@click.option("--remove", metavar="ID", help="Stop and remove schedule ID.")
@click.option("--stack", is_flag=True, help="Queue a job at every firing, even while the last one is unfinished.")
@click.option("--json", "as_json", is_flag=True, help="With --list: a JSON array (id, calendar, name, argv, stack, next, last).")
@click.pass_obj
def every(obj: Context, calendar: str | None, name: str | None, args: tuple[str, ...], show: bool, remove: str | None,
          stack: bool, as_json: bool) -> None:  # fmt: skip
    """Queue NAME ARGS... at every CALENDAR time (systemd calendar syntax).

    Installs a persistent timer in this queue's manager (see `systemctl
    list-timers`): a run missed while the machine was off happens at boot.
    No job is added while the last one is still unfinished, unless --stack.
    In the system queue only root may add or remove schedules.

    Example: miniq every 'Mon..Fri *-*-* 03:00' backup /srv

    Example: miniq every --list
    """
    from ..systemd import every as schedules

    if show or remove:
        if calendar or name or args:
            raise BadInput("--list and --remove take no CALENDAR or NAME")
        if remove:
            gone = schedules.remove(obj.manager, remove)
            say(f"removed schedule {gone.id} ({gone.calendar}: {gone.name})")
            return
        if as_json:
            found = []
            for item in schedules.schedules(obj.manager, obj.root):
                upcoming, last = schedules.times(obj.manager, item)
                found.append({"id": item.id, "calendar": item.calendar, "name": item.name, "argv": list(item.argv),
                              "stack": item.stack, "next": upcoming, "last": last})  # fmt: skip
            say_json(json.dumps(found))
            return
        rows = [("ID", "CALENDAR", "NEXT", "LAST", "JOB")]
        import shlex

        for item in schedules.schedules(obj.manager, obj.root):
            upcoming, last = schedules.times(obj.manager, item)
            job = shlex.join([item.name, *item.argv]) + (" (--stack)" if item.stack else "")
            rows.append((item.id, item.calendar, upcoming, last, job))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            say("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:4])) + "  " + r[4])
        return
    if as_json:
        raise BadInput("--json goes with --list")
    if not calendar or not name:
        raise BadInput("expected CALENDAR NAME [ARGS]..., e.g. miniq every daily backup /srv (or --list, --remove ID)")
    if args[:1] == ("--",):
        args = args[1:]
    made = schedules.add(obj.manager, obj.root, calendar, name, list(args), stack)
    upcoming, _ = schedules.times(obj.manager, made)
    say(f"{made.id}: {made.timer} queues {name} at {made.calendar}; next: {upcoming}")


@click.command()
@click.option("--window", metavar="DURATION", default="24h", show_default=True, help="Finished jobs of this long ago count.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON (shape in README).")
@click.option("--prometheus", "prom", metavar="FILE", help="Write the Prometheus text format to FILE (*.prom), atomically.")
@click.option("--counts", is_flag=True, help="Only jobs per state, from the file names: quick on a long queue (no types, ages or runs).")
@click.pass_obj
def stats(obj: Context, window: str, as_json: bool, prom: str | None, counts: bool) -> None:
    """Jobs per state and type, finished jobs and run times, oldest queued job's age.

    Through the system queue's helper a user sees figures of their own jobs.
    With --prometheus FILE the figures go to FILE for node_exporter's textfile
    collector; `prometheus-file` in [processor] of miniq.conf makes every
    processor run refresh it.

    Example: miniq stats --window 1h

    Example: miniq stats --prometheus /var/lib/prometheus/node-exporter/miniq.prom
    """
    from pathlib import Path

    from ..core.timeparse import parse_duration
    from ..store.stats import collect, prometheus_text, write_textfile

    if prom and obj.caller is not None and not obj.caller.is_root:
        from ..core.errors import NotPermitted

        raise NotPermitted("only root may write the system queue's figures to a file; use miniq --system stats --json")
    if counts and prom:
        from ..core.errors import BadInput

        raise BadInput("--counts leaves out most figures: it does not go with --prometheus")
    figures = collect(obj.queue, parse_duration(window), counts_only=counts)
    if prom:
        write_textfile(Path(prom), prometheus_text(figures, str(obj.root)))
        say(f"wrote {prom}")
        return
    if as_json:
        say_json(json.dumps(figures.to_json(), indent=2))
        return
    _print_stats(figures.to_json(), window)


def _print_stats(data: dict[str, Any], window: str) -> None:
    """``miniq stats`` for a person."""
    totals = data["jobs"]
    say("jobs: " + ", ".join(f"{totals[s]} {s}" for s in totals))
    age = data["oldest_queued_age_seconds"]
    if not data["counts_only"]:
        say(f"oldest queued job: {'none' if age is None else f'{age:.0f} s old'}")
    for host, count in data["running_by_host"].items():
        say(f"running on {host}: {count}")
    for pause in data["paused"]:
        say("paused: the whole queue" if pause == "@all" else f"paused: job type {pause}")
    for name, slot in data["slots"].items():
        say(f"slots of {name}: {slot['used']} of {slot['count']} in use")
    if data["counts_only"]:
        return
    rows = [("JOB", "QUEUED", "DELAYED", "HELD", "RUNNING", "DONE", "FAILED", "P50 S", "P90 S", "MAX S")]
    for name in sorted(set(data["jobs_by_type"]) | set(data["finished_by_type"])):
        now = data["jobs_by_type"].get(name, {})
        ended = data["finished_by_type"].get(name, {"done": 0, "failed": 0, "duration_seconds": {}})
        d = ended["duration_seconds"]

        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.1f}"

        rows.append((name, *(str(now.get(s, 0)) for s in ("queued", "delayed", "held", "running")), str(ended["done"]),
                     str(ended["failed"]), fmt(d.get("p50")), fmt(d.get("p90")), fmt(d.get("max"))))  # fmt: skip
    say(f"by job type (finished: last {window}):")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        say("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())


@click.command("install-units")
@click.option("--now", is_flag=True, help="Also enable and start miniq-process.timer and miniq-process.path.")
@click.option("--timer-period", metavar="PERIOD", help="How often the timer starts the processor (default 1min), e.g. 15s.")
@click.pass_obj
def install_units(obj: Context, now: bool, timer_period: str | None) -> None:
    """Install the units for this miniq (user units with --user, system units with --system).

    ExecStart= points at this installation, so a venv or ~/.local works.
    The queue root (the default, --root or MINIQ_ROOT) is written into the
    units, so they and this command always mean the same queue.

    Example: miniq --user install-units --now
    """
    from ..systemd.units import install

    manager = obj.manager
    for path in install(manager, obj.root, obj.queue.ensure_layout, now, timer_period):
        say(f"installed {path}")
    if not now:
        say(f"enable with: {' '.join(manager.systemctl('enable', '--now', 'miniq-process.timer', 'miniq-process.path'))}")


@click.command("uninstall-units")
@click.option("--force", is_flag=True, help="Even while jobs run (they are stopped, and run again from the start later).")
@click.pass_obj
def uninstall_units(obj: Context, force: bool) -> None:
    """Stop, disable and remove the units that install-units wrote; queued jobs stay.

    Example: miniq --user uninstall-units
    """
    from ..core.job import State
    from ..systemd.units import uninstall

    running = list(obj.queue.entries(State.RUNNING))
    if running and not force:
        raise BadInput(
            f"{len(running)} job(s) are running (e.g. {running[0][0]}); removing the units would stop them, "
            "and they would run again from the start later",
            hint="wait for them (miniq wait ID), or use --force",
        )
    for path in uninstall(obj.manager):
        say(f"removed {path}")
