"""The processor's ordered view of ``queue/`` and ``delayed/``.

Claiming the next job must not cost more as the queue grows, so the view
lists ``queue/`` once, keeps the names in heaps (their names sort in run
order, layout.py), and learns of new entries from inotify instead of
listing again.

Order.  Higher priorities first; within a priority, the submitters (owners
of the files, as the kernel says) take turns: the next job is the oldest one
of the submitter served longest ago.  So a user's job waits behind at most
one job of each other user per slot, whatever their backlogs; with a single
submitter (a user's own queue) this is plain submission order.  Each file's
owner is looked up once, when the view first sees its name.  It lists again
only when the heap runs dry (to be sure the queue is empty), when inotify
lost events, and on a root shared over NFS, whose other machines' entries no
inotify event announces, every ``RELIST`` seconds, or every ``RELIST_SHARE``
times what the last listing took if that is longer: listing 100,000 entries
takes about 170 ms here, which every 5 s cost each job 4% of its time.  On a
local file system inotify sees every entry, so the time per job does not
grow with the queue.  Delayed entries are kept in a heap by due time, read from their
names; entries waiting for dependencies are read once and their
dependencies checked by exact names.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..core import files
from ..core.files import Unusable, read_untrusted
from ..core.inotify import Inotify, open_watch
from ..core.job import Job, State
from .layout import HELD, WAKE, Layout, parse_delayed_name, queue_sort_key

RELIST = 5.0  # seconds between listings of a root on NFS while the heap is not empty
RELIST_SHARE = 50  # ... or this many times what the last listing took, if longer
PRIORITY_DIGITS = 4  # a sort key starts with the priority (layout.py)


class Pending:
    def __init__(self, layout: Layout, watch: bool = True) -> None:
        self.layout = layout
        self.queue_dir = str(layout.queue)  # a string: pathlib costs more than the lstat, per entry
        self.queue = _Turns()
        self.seen: dict[str, int] = {}  # name -> owner uid, of names in the view
        self.due: list[tuple[float, str]] = []  # (due time, name) of delayed/
        self.after: dict[str, Job | None] = {}  # delayed/after-*: the job, once read
        self.held: dict[str, Job | None] = {}  # delayed/held-*: the job, once read
        self.woken = False  # a wake file arrived: look at delayed/ again
        self.ino: Inotify | None = open_watch(layout.queue, layout.delayed) if watch else None
        self.listed = 0.0
        #: Seconds until the next listing while the heap holds entries (module comment).
        self.relist_every = RELIST if watch is False or self.ino is None or layout.on_nfs else float("inf")
        self.delayed_listed = 0.0
        self.checked = 0.0  # when dependencies were last looked at
        self.checked_count = -1  # and how many records the processor had published then
        self.held_checked = 0.0  # when held entries were last looked at
        self.held_count = -1  # and how many records the processor had published then

    def close(self) -> None:
        if self.ino:
            self.ino.close()

    def fileno(self) -> int | None:
        return self.ino.fileno() if self.ino else None

    # -- queue/ ---------------------------------------------------------------

    def _add(self, name: str, known: dict[str, int] | None = None, dir_fd: int | None = None) -> None:
        if name.startswith(".") or name in self.seen:
            return
        if name == WAKE:
            self.woken = True
            return
        owner = known.get(name) if known else None
        if owner is None:
            try:
                if dir_fd is None:
                    owner = os.lstat(f"{self.queue_dir}/{name}").st_uid
                else:
                    owner = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid
            except FileNotFoundError:
                return  # claimed meanwhile
        self.seen[name] = owner
        self.queue.push(owner, queue_sort_key(name), name)

    def relist(self) -> None:
        """List ``queue/`` afresh (also what inotify cannot see)."""
        files.revalidate(self.layout.queue)
        try:
            fd = os.open(self.queue_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = None
        known, self.seen = self.seen, {}
        self.queue.clear()
        began = time.monotonic()
        try:
            for name in os.listdir(fd) if fd is not None else []:
                self._add(name, known, fd)
        finally:
            if fd is not None:
                os.close(fd)
        self.listed = time.monotonic()
        if self.relist_every != float("inf"):
            self.relist_every = max(RELIST, RELIST_SHARE * (self.listed - began))

    def absorb(self) -> None:
        """Take in what inotify reported; list again if it lost events."""
        if self.ino is None:
            return
        events, overflow = self.ino.events()
        if overflow:
            self.relist()
            self.list_delayed()
            return
        for directory, name in events:
            if directory == self.layout.queue:
                self._add(name)
            else:
                self._add_delayed(name)

    def next(self) -> Path | None:
        """The entry to claim next, or None when the queue is empty."""
        self.absorb()
        if not self.queue or time.monotonic() - self.listed > self.relist_every:
            self.relist()
        while self.queue:
            name = self.queue.pop()
            self.seen.pop(name, None)
            path = self.layout.queue / name
            if os.path.lexists(path):
                return path
            if not self.queue:
                self.relist()
        return None

    def take_wake(self) -> bool:
        """Whether a wake file arrived (it is removed)."""
        self.absorb()
        woken = self.woken or os.path.lexists(self.layout.wake)
        if woken:
            self.layout.wake.unlink(missing_ok=True)
        self.woken = False
        return woken

    # -- delayed/ -------------------------------------------------------------

    def _add_delayed(self, name: str) -> None:
        if name.startswith("."):
            return
        parsed = parse_delayed_name(name)
        if parsed is None:
            heapq.heappush(self.due, (0.0, name))  # foreign or 0.1.0: looked at now
        elif parsed[0] is None:
            self.after.setdefault(name, None)
        elif parsed[0] == HELD:
            self.held.setdefault(name, None)
        else:
            heapq.heappush(self.due, (parsed[0], name))

    def list_delayed(self) -> None:
        files.revalidate(self.layout.delayed)
        try:
            names = os.listdir(self.layout.delayed)
        except FileNotFoundError:
            names = []
        self.due, known, known_held = [], self.after, self.held
        self.after, self.held = {}, {}
        for name in names:
            self._add_delayed(name)
            if name in known:
                self.after[name] = known[name]
            if name in known_held:
                self.held[name] = known_held[name]
        self.delayed_listed = time.monotonic()

    def due_now(self, now: float) -> Iterator[Path]:
        """Entries of ``delayed/`` whose time has come (or that must be looked at)."""
        while self.due and self.due[0][0] <= now:
            _, name = heapq.heappop(self.due)
            path = self.layout.delayed / name
            if os.path.lexists(path):
                yield path

    def add_due(self, due: float, name: str) -> None:
        heapq.heappush(self.due, (due, name))

    def add_waiting(self, name: str) -> None:
        """An entry of ``delayed/`` now waiting for its dependencies."""
        self.after.setdefault(name, None)

    def earliest(self) -> float | None:
        return self.due[0][0] if self.due else None

    def waiting(self) -> Iterator[tuple[Path, Job | None]]:
        """Entries waiting for dependencies, with their job once read."""
        return self._read(self.after, list(self.after))

    def held_jobs(self) -> Iterator[tuple[Path, Job | None]]:
        """Held entries (pause.py, slots.py) in id order, with their job once read."""
        return self._read(self.held, sorted(self.held, key=lambda n: n[len("held-") :]))

    def _read(self, table: dict[str, Job | None], names: list[str]) -> Iterator[tuple[Path, Job | None]]:
        """Entries ``names`` of ``table`` still in ``delayed/``, each read once (gone ones are dropped)."""
        for name in names:
            path = self.layout.delayed / name
            if not os.path.lexists(path):
                del table[name]
                continue
            if table[name] is None:
                table[name] = _read_job(path)
            yield path, table[name]

    def forget(self, path: Path) -> None:
        self.after.pop(path.name, None)
        self.held.pop(path.name, None)


class _Turns:
    """Queued names by owner, taken in turns (see the module comment)."""

    def __init__(self) -> None:
        self.heaps: dict[int, list[tuple[str, str]]] = {}  # owner -> heap of (sort key, name)
        self.turn: dict[int, int] = {}  # owner -> when they were last served
        self.serial = 0

    def __bool__(self) -> bool:
        return bool(self.heaps)

    def __len__(self) -> int:
        return sum(len(h) for h in self.heaps.values())

    def clear(self) -> None:
        self.heaps = {}

    def push(self, owner: int, key: str, name: str) -> None:
        heapq.heappush(self.heaps.setdefault(owner, []), (key, name))

    def pop(self) -> str:
        """The next name: best priority first, then the owner served longest ago."""
        best = min(heap[0][0][:PRIORITY_DIGITS] for heap in self.heaps.values())
        owner = min(
            (o for o, heap in self.heaps.items() if heap[0][0][:PRIORITY_DIGITS] == best),
            key=lambda o: (self.turn.get(o, -1), self.heaps[o][0][0]),
        )
        heap = self.heaps[owner]
        _, name = heapq.heappop(heap)
        if not heap:
            del self.heaps[owner]
        self.serial += 1
        self.turn[owner] = self.serial
        return name


def _read_job(path: Path) -> Job | None:
    """The job in a delayed entry, or None if it is unusable (to be rejected)."""
    try:
        data, _ = read_untrusted(path)
        return Job.from_json(files.load_json(data))
    except (Unusable, ValueError, FileNotFoundError):
        return None


def dependency_state(layout: Layout, job: Job) -> tuple[bool, str | None]:
    """(still waiting, reason it can never run) for a job's ``after`` list."""
    from .ending import newer_state

    waiting = False
    for dep in job.schedule.after:
        # A job moves between states while it is looked for (delayed, queued,
        # running, back to delayed...): it is gone only if three looks miss it.
        for _ in range(3):
            if os.path.lexists(layout.record(State.DONE, dep)):
                break
            if os.path.lexists(layout.record(State.FAILED, dep)):
                return False, f"job {dep} it runs after did not succeed"
            if newer_state(layout, dep) or layout.scan(State.RUNNING, dep) is not None:
                waiting = True
                break
        else:
            return False, f"job {dep} it runs after no longer exists"
    return waiting, None
