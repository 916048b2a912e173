"""miniq's Cockpit page in a real browser, in the sandbox's systemd.

Both Debian packages of this checkout (miniq and cockpit-miniq, lintian
--pedantic clean) are installed with apt beside Debian's cockpit-ws and
cockpit-bridge; Debian's chromium, headless, logs in through Cockpit's
login page as alice and as root (browser.py) and checks what a person
would: the overview's figures are `miniq stats`'; a job enqueued from a
shell shows without a reload; a job's output shows while it runs; cancel
and retry from the page change `miniq show`; alice never sees bob's jobs;
a hostile argument renders as text; pause works for root and is refused
for alice with miniq's own message.  Each test saves a screenshot of the
browser when it fails (in the test's temporary directory, printed); with
MINIQ_SCREENSHOTS=DIR the README's screenshots are written there too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from testbed.sandbox import Sandbox

from .browser import Browser, network_of

pytestmark = pytest.mark.systemd
REPO = Path(__file__).resolve().parent.parent.parent
APT = {"DEBIAN_FRONTEND": "noninteractive"}
PASSWORD = "miniq-test-0"
BASE = "http://127.0.0.1:9090"
HOSTILE = '<img src=x onerror="window.__pwned=1">'
ESCAPES = "\x1b[2K\u202eevil"
ECHO = '#!/bin/sh\nprintf "%s\\n" "$@"\n'
TALK = '#!/bin/sh\necho "first line"\nwhile [ ! -e "/tmp/release-$MINIQ_JOB_ID" ]; do sleep 0.1; done\necho "second line"\n'


@pytest.fixture(scope="module")
def debs() -> dict[str, Path]:
    from conftest import build_deb, fetch_dependencies, lintian_tags, page_deb

    found = {"miniq": build_deb(), "page": page_deb()}
    tags, lint = lintian_tags(found["page"])
    print("lintian --pedantic -I -E cockpit-miniq:", tags or "no tags")
    assert tags == [], lint
    # What the package ships is the page's source itself (no build step).
    listing = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(found["page"])], capture_output=True, check=True).stdout
    shipped = subprocess.run(["tar", "-t"], input=listing, capture_output=True, check=True).stdout.decode().split()
    page = sorted(p.rsplit("/", 1)[1] for p in shipped if p.startswith("./usr/share/cockpit/miniq/") and not p.endswith("/"))
    assert page == sorted(p.name for p in (REPO / "packaging" / "cockpit").iterdir() if p.is_file())
    for name in page:
        data = subprocess.run(["tar", "-xO", f"./usr/share/cockpit/miniq/{name}"], input=listing, capture_output=True, check=True).stdout
        assert data == (REPO / "packaging" / "cockpit" / name).read_bytes(), name
    fetch_dependencies(found["miniq"], found["page"])
    return found


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory, debs: dict[str, Path]) -> Iterator[Sandbox]:
    from conftest import package_sandbox

    sb = package_sandbox(tmp_path_factory.mktemp("cockpitsandbox") / "scratch", "cockpit", list(debs.values()))
    try:
        for user in ("alice", "bob"):
            sb.add_user(user)
        sb.run(["chpasswd"], input=f"alice:{PASSWORD}\nbob:{PASSWORD}\nroot:{PASSWORD}\n")
        out = sb.run(["apt-get", "-y", "install", str(debs["miniq"]), str(debs["page"])], env=APT, timeout=300).stdout
        assert "Setting up cockpit-miniq (0.3.0)" in out, out
        # Root logs in as the administrator (Cockpit keeps root out by default);
        # plain HTTP on the sandbox's own loopback.
        sb.sh("sed -i '/^root$/d' /etc/cockpit/disallowed-users")
        sb.sh("printf '[WebService]\\nAllowUnencrypted = true\\n' > /etc/cockpit/cockpit.conf")
        sb.run(["systemctl", "start", "cockpit.socket"])
        for user in ("alice", "bob"):
            sb.run(["loginctl", "enable-linger", user])  # their queues run whether or not they are logged in
            sb.run(["systemctl", "--user", "enable", "--now", "miniq-process.timer", "miniq-process.path"], user=user)
        sb.sh("mkdir -p /var/lib/miniq/jobs && cat > /var/lib/miniq/jobs/echo.job && chmod 755 /var/lib/miniq/jobs/echo.job", input=ECHO)
        sb.sh("cat > /var/lib/miniq/jobs/talk.job && chmod 755 /var/lib/miniq/jobs/talk.job", input=TALK)
        for user in ("alice", "bob"):
            jobs = "~/.local/state/miniq/jobs"
            sb.sh(f"mkdir -p {jobs} && cat > {jobs}/echo.job && chmod 755 {jobs}/echo.job", user=user, input=ECHO)
        yield sb
    finally:
        sb.close()


@pytest.fixture(scope="module")
def net(box: Sandbox) -> Iterator[None]:
    """This test thread on the sandbox's network while the module runs (browser.py)."""
    with network_of(box.pid1):
        yield


@pytest.fixture
def browsers(net: None, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Browser]]:
    """A logged-in browser per user, asked for by name; a screenshot of each when the test fails."""
    opened: dict[str, Browser] = {}

    class Sessions(dict):  # type: ignore[type-arg]
        def __missing__(self, user: str) -> Browser:
            browser = Browser(BASE, tmp_path / "screenshots")
            browser.login(user, PASSWORD)
            opened[user] = browser
            self[user] = browser
            return browser

    sessions = Sessions()
    try:
        yield sessions  # type: ignore[misc]
    finally:
        report = getattr(request.node, "rep_call", None)
        for user, browser in opened.items():
            if report is not None and report.failed:
                print(f"screenshot of {user}'s browser: {browser.shot(f'{request.node.name}-{user}')}")
            browser.close()


@contextmanager
def nothing_runs(box: Sandbox, user: str) -> Iterator[None]:
    """No processor of ``user``'s queue starts (its service masked for now): jobs stay where the test puts them."""
    box.run(["systemctl", "--user", "mask", "--now", "miniq-process.service"], user=user)  # not --runtime: a login may restart the manager
    try:
        yield
    finally:
        box.run(["systemctl", "--user", "unmask", "miniq-process.service"], user=user)
        box.run(["systemctl", "--user", "start", "miniq-process.path", "miniq-process.timer"], user=user)


@contextmanager
def released(box: Sandbox, job: str) -> Iterator[None]:
    """The ``talk`` job ``job`` released at the end, whatever happened: a failed test leaves no job holding a slot."""
    try:
        yield
    finally:
        box.run(["touch", f"/tmp/release-{job}"], check=False)


def miniq(box: Sandbox, user: str | None, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return box.run(["miniq", *args], user=user, **kw)


def readme_shot(browser: Browser, name: str) -> None:
    target = os.environ.get("MINIQ_SCREENSHOTS")
    if target:
        browser.screenshots = Path(target)
        print(f"README screenshot: {browser.shot(name)}")


def rows(browser: Browser) -> list[str]:
    return list(browser.driver.execute_script("return [...document.querySelectorAll('#jobs tbody tr[data-id]')].map(r => r.dataset.id)"))


def test_the_overview_shows_what_miniq_stats_says(box: Sandbox, browsers: dict[str, Browser]) -> None:
    miniq(box, None, "--system", "pause")
    try:
        for i in range(3):
            miniq(box, "alice", "--system", "enqueue", "echo", f"overview {i}")
        miniq(box, None, "--system", "enqueue", "--in", "1h", "echo", "later")
        for user, args in ((None, ["--system"]), ("alice", ["--system"]), ("alice", ["--user"])):
            browser = browsers[user or "root"]
            browser.open("/", queue=args[0].lstrip("-"))
            stats = json.loads(miniq(box, user, *args, "stats", "--json").stdout)
            shown = {s: browser.text(f"#count-{s} .mq-card-value") for s in ("queued", "delayed", "held", "running")}
            assert shown == {s: str(stats["jobs"][s]) for s in shown}, (user, args)
            per_type = browser.driver.execute_script(
                "return Object.fromEntries([...document.querySelectorAll('#types tbody tr[data-type]')].map(r => "
                "[r.dataset.type, [...r.cells].slice(1, 5).map(c => c.textContent)]))"
            )
            assert per_type == {n: [str(v[s]) for s in ("queued", "delayed", "held", "running")] for n, v in stats["jobs_by_type"].items()}
            assert browser.driver.find_elements("css selector", "svg.mq-chart rect") or not any(
                h["done"] + h["failed"] for h in stats["finished_by_hour"]
            )
            if user is None:
                assert browser.driver.find_elements("id", "paused-banner")
        assert browser.console_errors() == []
    finally:
        miniq(box, None, "--system", "resume")


def test_a_job_enqueued_from_a_shell_shows_without_a_reload(box: Sandbox, browsers: dict[str, Browser]) -> None:
    """Live through Cockpit's file watch on the queue's directories, not by
    asking again on a timer: the page says so, and the row comes long
    before its fallback timer (30 s) would have fired.  The time it took is
    printed (the benchmark of first sight is the closing note's, not a test's)."""
    alice = browsers["alice"]
    with nothing_runs(box, "alice"):  # the jobs stay queued while the page looks
        alice.open("/jobs?state=queued", queue="user")
        assert alice.text("#live") == "Live"
        took = []
        for i in range(3):
            before = set(rows(alice))
            t0 = time.monotonic()
            job = miniq(box, "alice", "enqueue", "echo", f"live {i}").stdout.strip()
            alice.wait(lambda job=job: job in rows(alice), f"job {job} in the table", timeout=10, poll=0.02)
            took.append(time.monotonic() - t0)
            assert set(rows(alice)) - before == {job}
        print(f"enqueue in a shell -> row in the page: {', '.join(f'{t * 1000:.0f} ms' for t in took)} (including the shell's miniq)")


def test_a_jobs_output_shows_while_it_runs(box: Sandbox, browsers: dict[str, Browser]) -> None:
    root = browsers["root"]
    job = miniq(box, None, "--system", "enqueue", "talk").stdout.strip()
    with released(box, job):
        deadline = time.monotonic() + 30
        while json.loads(miniq(box, None, "--system", "show", "--json", job).stdout)["state"] != "running":
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.1)
        root.open(f"/job/{job}", queue="system")
        root.wait(lambda: "first line" in root.text("#output"), "the first line of output")
        assert root.text("#job-state") == "running" and "second line" not in root.text("#output")
        readme_shot(root, "job")
    root.wait(lambda: "second line" in root.text("#output"), "the second line, as it came")
    root.wait(lambda: root.text("#job-state") == "done", "the job's end, without a reload")
    assert root.console_errors() == []


def test_a_job_that_starts_while_its_page_is_open_shows_its_output(box: Sandbox, browsers: dict[str, Browser]) -> None:
    """Opened while queued (its output empty), the job starts: the page follows its output
    as it comes, without a reload (before, the empty output read while queued stayed)."""
    root = browsers["root"]
    miniq(box, None, "--system", "pause")
    try:
        job = miniq(box, None, "--system", "enqueue", "talk").stdout.strip()
    except BaseException:
        miniq(box, None, "--system", "resume")
        raise
    with released(box, job):
        try:
            root.open(f"/job/{job}", queue="system")
            assert root.text("#job-state") in ("queued", "delayed") and "first line" not in root.text("#output")  # held by the pause
        finally:
            miniq(box, None, "--system", "resume")
        root.wait(lambda: "first line" in root.text("#output"), "the output of the job that started")
        assert root.text("#job-state") == "running"
    root.wait(lambda: "second line" in root.text("#output"), "the second line, as it came")
    root.wait(lambda: root.text("#job-state") == "done", "the job's end")
    assert root.text("#output").count("first line") == 1
    assert root.console_errors() == []


def test_cancel_and_retry_from_the_page(box: Sandbox, browsers: dict[str, Browser]) -> None:
    alice = browsers["alice"]
    with nothing_runs(box, "alice"):
        job = miniq(box, "alice", "enqueue", "echo", "cancel me").stdout.strip()
        alice.open(f"/job/{job}", queue="user")
        alice.click("#action-cancel")
        alice.confirm()
        alice.wait(lambda: alice.text("#job-state") == "failed", "the cancelled job's state")
        record = json.loads(miniq(box, "alice", "show", "--json", job).stdout)
        assert (record["state"], record["result"]["outcome"]) == ("failed", "cancelled")
        alice.click("#action-retry")
        alice.confirm()
        alice.wait(lambda: alice.text("#job-state") == "queued", "the retried job queued again")
        assert json.loads(miniq(box, "alice", "show", "--json", job).stdout)["state"] == "queued"
    box.run(["miniq", "wait", job], user="alice", timeout=60)
    alice.wait(lambda: alice.text("#job-state") == "done", "the job's end")


def test_alice_never_sees_bobs_jobs(box: Sandbox, browsers: dict[str, Browser]) -> None:
    bobs = miniq(box, "bob", "--system", "enqueue", "echo", "bob's secret").stdout.strip()
    hers = miniq(box, "alice", "--system", "enqueue", "echo", "hers").stdout.strip()
    box.run(["miniq", "--system", "wait", bobs, hers], timeout=60)
    alice, root = browsers["alice"], browsers["root"]
    for state in ("done", "queued", "failed", "running"):
        alice.open(f"/jobs?state={state}", queue="system")
        page = alice.driver.page_source
        assert bobs not in page and "secret" not in page and "bob" not in alice.text("#jobs tbody"), state
    alice.open("/jobs?state=done", queue="system")
    assert hers in rows(alice)
    assert alice.driver.find_elements("id", "filter-owner") == []  # no user filter without administrative access
    alice.open("/", queue="system")
    assert "bob" not in alice.text("#main")
    root.open("/jobs?state=done&owner=bob", queue="system")
    assert rows(root) == [bobs] or bobs in rows(root)
    assert all(
        owner == "bob"
        for owner in root.driver.execute_script(
            "return [...document.querySelectorAll('#jobs tbody tr[data-id]')].map(r => r.cells[3].textContent)"
        )
    )


def test_a_hostile_argument_renders_as_text(box: Sandbox, browsers: dict[str, Browser]) -> None:
    alice = browsers["alice"]
    job = miniq(box, "alice", "enqueue", "echo", HOSTILE, ESCAPES).stdout.strip()
    box.run(["miniq", "wait", job], user="alice", timeout=60)
    alice.open("/jobs?state=done", queue="user")
    args = alice.driver.execute_script("return document.querySelector(`#jobs tr[data-id='${arguments[0]}'] .mq-args`).textContent", job)
    assert args == "'<img src=x onerror=\"window.__pwned=1\">' '\\x1b[2K\\u202eevil'"
    alice.open(f"/job/{job}", queue="user")
    alice.wait(lambda: "onerror" in alice.text("#output"), "the job's output")
    output = alice.driver.execute_script("return document.getElementById('output').textContent")
    assert HOSTILE in output and "\\x1b[2K\\u202eevil" in output and "\x1b" not in output and "\u202e" not in output
    record = alice.driver.execute_script("return document.getElementById('record').textContent")
    assert "\x1b" not in record and HOSTILE in record
    assert alice.driver.execute_script("return document.querySelectorAll('#main img, #main script').length") == 0
    assert alice.driver.execute_script("return window.__pwned === undefined")
    assert alice.console_errors() == []


def test_a_live_redraw_keeps_what_a_person_is_doing(box: Sandbox, browsers: dict[str, Browser]) -> None:
    """On a busy queue every view is drawn again whenever a job moves: text typed into a
    form, the control that has the focus and the place a person scrolled a job's output
    to stay as they were (before, each redraw emptied the forms and dropped the focus)."""
    alice = browsers["alice"]
    d = alice.driver
    finished = miniq(box, "alice", "enqueue", "echo", *(f"line {i}" for i in range(300))).stdout.strip()
    box.run(["miniq", "wait", finished], user="alice", timeout=60)

    def redrawn(css: str) -> None:
        """A change in the queue (a job queued in a shell) and the view drawn again: ``css`` is a new element."""
        d.execute_script("document.querySelector(arguments[0]).dataset.before = 'yes'", css)
        miniq(box, "alice", "enqueue", "echo", "a change")
        new = "const n = document.querySelector(arguments[0]); return n !== null && n.dataset.before === undefined"
        alice.wait(lambda: d.execute_script(new, css), f"a live redraw of {css}")

    focus = "return [document.activeElement.id, document.activeElement.value]"
    with nothing_runs(box, "alice"):
        alice.open("/jobs?state=queued", queue="user")
        alice.type("#filter-type", "ec")
        redrawn("#jobs")
        assert d.execute_script(focus) == ["filter-type", "ec"]
        alice.open("/schedules", queue="user")
        alice.type("#schedule-calendar", "daily")
        redrawn("#schedules")
        assert d.execute_script(focus) == ["schedule-calendar", "daily"]
        alice.open("/", queue="user")
        d.execute_script("document.querySelector('#types tr[data-type=echo] button').focus()")
        redrawn("#types")
        assert d.execute_script("return document.activeElement.closest('tr[data-type]')?.dataset.type") == "echo"
        alice.open(f"/job/{finished}", queue="user")
        alice.wait(lambda: "line 299" in alice.text("#output"), "the whole output")
        scrolled = d.execute_script("const o = document.getElementById('output'); o.scrollTop = 400; return o.scrollTop")
        assert scrolled > 0
        redrawn("#record")
        assert d.execute_script("return document.getElementById('output').scrollTop") == scrolled
        assert alice.console_errors() == []


def test_a_schedule_added_and_removed_from_the_page(box: Sandbox, browsers: dict[str, Browser]) -> None:
    """Added: `miniq every --list` has it, its row shows and the form is empty again (live
    redraws keep the form, so the page empties it itself); removed after a confirmation."""
    alice = browsers["alice"]
    d = alice.driver
    alice.open("/schedules", queue="user")
    alice.type("#schedule-calendar", "Mon..Fri 03:00")
    alice.type("#schedule-name", "echo")
    alice.click("#schedule-add button[type=submit]")
    alice.wait(lambda: "echo" in alice.text("#schedules tbody"), "the new schedule's row")
    found = json.loads(miniq(box, "alice", "every", "--list", "--json").stdout)
    assert [(s["name"], s["argv"]) for s in found] == [("echo", [])] and "03:00" in found[0]["calendar"]
    assert found[0]["calendar"] in alice.text("#schedules tbody")  # as systemd normalised it
    form = "const f = document.getElementById('schedule-add').elements; "
    fields = form + "return [f.calendar.value, f.name.value, f.argv.value, f.stack.checked]"
    assert d.execute_script(fields) == ["", "", "", False]
    alice.click(f"#schedules button[data-key='remove:{found[0]['id']}']")
    alice.confirm()
    alice.wait(lambda: "No schedules." in alice.text("#schedules tbody"), "the schedule gone from the page")
    assert json.loads(miniq(box, "alice", "every", "--list", "--json").stdout) == []
    assert alice.console_errors() == []


def test_the_pages_face_shows_what_miniqs_face_shows(browsers: dict[str, Browser]) -> None:
    """The page gets a job's text as exact JSON and escapes it itself: its face (miniq.js) must
    show every string as miniq's face (miniq/core/face.py) does, in one line and keeping lines."""
    from miniq.core.face import visible, visible_lines

    source = (REPO / "packaging" / "cockpit" / "miniq.js").read_text()
    face = source[source.index("    const SPECIAL = ") : source.index("    /* An element:")]
    corpus = ["plain", "tab\there", "two\nlines\n", "\r\x1b[2K\x1b[1A\x00\x7f", "\x85\x9b\xa0", "\u202e\u2066\u061c\u2028\u200f",
              "\udc80\udcff", "\ud800", "é ü 漢 🙂", "'quoted' \"double\""]  # fmt: skip
    # As ASCII JSON: a lone surrogate cannot travel in WebDriver's UTF-8 request, JSON.parse makes it.
    script = face + "const c = JSON.parse(arguments[0]); return [c.map(t => visible(t)), c.map(t => visibleLines(t))];"
    shown = browsers["alice"].driver.execute_script(script, json.dumps(corpus))
    assert shown == [[visible(t) for t in corpus], [visible_lines(t) for t in corpus]]


def test_pause_from_the_page_for_root_and_not_for_alice(box: Sandbox, browsers: dict[str, Browser]) -> None:
    root, alice = browsers["root"], browsers["alice"]
    root.open("/", queue="system")
    readme_shot(root, "overview")
    root.click("#types tr[data-type='echo'] button")
    root.confirm()
    root.wait(lambda: "paused" in root.text("#types tr[data-type='echo']"), "echo paused on the page")
    assert json.loads(miniq(box, None, "--system", "stats", "--json").stdout)["paused"] == ["echo"]
    try:
        alice.open("/", queue="system")
        alice.click("#types tr[data-type='echo'] button")  # Resume, as she sees it paused
        alice.confirm()
        alice.wait(lambda: alice.driver.find_element("id", "alert").is_displayed(), "miniq's refusal")
        said = alice.text("#alert")
        refused = miniq(box, "alice", "--system", "resume", "echo", check=False)
        assert refused.returncode == 5
        assert refused.stderr.strip().splitlines()[0].removeprefix("Error: ") in said
        assert json.loads(miniq(box, None, "--system", "stats", "--json").stdout)["paused"] == ["echo"]
    finally:
        root.open("/", queue="system")
        root.click("#types tr[data-type='echo'] button")
        root.confirm()
        root.wait(lambda: "paused" not in root.text("#types tr[data-type='echo']"), "echo resumed on the page")
    assert json.loads(miniq(box, None, "--system", "stats", "--json").stdout)["paused"] == []


def test_enqueue_from_the_page_with_options(box: Sandbox, browsers: dict[str, Browser]) -> None:
    alice = browsers["alice"]
    alice.open("/enqueue", queue="user")
    form = alice.driver
    alice.type("#enqueue-name", "echo")
    alice.type("#enqueue-argv", "-x\nsecond arg")
    alice.type("#enqueue-priority", "5")
    alice.type("#enqueue-timeout", "1m")
    alice.click("#enqueue-submit")
    alice.wait(lambda: form.find_elements("id", "enqueued"), "the new job's id")
    job = alice.text("#enqueued")
    record = json.loads(miniq(box, "alice", "show", "--json", job).stdout)
    assert (record["argv"], record["schedule"]["priority"], record["limits"]["timeout"]) == (["-x", "second arg"], 5, 60.0)
    alice.clear("#enqueue-name")
    alice.type("#enqueue-name", "no-such-type")
    alice.click("#enqueue-submit")
    alice.wait(lambda: form.find_element("id", "alert").is_displayed(), "miniq's error")
    assert "no job type 'no-such-type'" in alice.text("#alert")


def test_the_page_at_a_phones_width_in_the_dark(box: Sandbox, net: None, tmp_path: Path) -> None:
    """Cockpit's dark style (its shell:style setting) and a 390 px wide screen:
    nothing wider than the screen but the tables, which scroll inside."""
    phone = Browser(BASE, tmp_path, width=390, height=844)
    try:
        phone.login("alice", PASSWORD)
        phone.driver.execute_script("window.localStorage.setItem('shell:style', 'dark')")
        phone.open("/", queue="user")
        assert phone.driver.execute_script("return document.documentElement.classList.contains('pf-theme-dark')")
        background = phone.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(27, 29, 33)", background
        assert phone.driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        # Keyboard: the tabs are links in order, the queue switch buttons.
        phone.type("#queue-system", "\n")
        phone.wait(lambda: "queue=system" in phone.driver.current_url, "the system queue by keyboard")
        readme_shot(phone, "phone-dark")
        assert phone.console_errors() == []
    finally:
        phone.close()


def test_a_queue_of_100000_jobs_stays_responsive(box: Sandbox, net: None, tmp_path: Path) -> None:
    """Bob's queue with 100,000 queued jobs (nothing runs them): the jobs
    view draws a page of 50 and pages on, opening only that page's files
    (``miniq list --limit --offset``); the overview counts them all (``miniq
    stats`` reads each job's file once).  The first paint of each is printed
    for the closing note, not held to a figure here (a shared machine)."""
    with nothing_runs(box, "bob"):
        _a_long_queue(box, tmp_path)


def _a_long_queue(box: Sandbox, tmp_path: Path) -> None:
    lines = "".join(f"n{i}\n" for i in range(100_000))
    started = time.monotonic()
    miniq(box, "bob", "enqueue", "--stdin", "echo", input=lines, timeout=600)
    print(f"100,000 jobs queued with enqueue --stdin in {time.monotonic() - started:.1f} s")
    bob = Browser(BASE, tmp_path)
    try:
        bob.login("bob", PASSWORD)
        jobs_paint, _ = bob.open("/jobs?state=queued", queue="user")
        cli = json.loads(miniq(box, "bob", "list", "--json", "--state", "queued", "--limit", "50").stdout)
        assert rows(bob) == [r["id"] for r in cli], (len(rows(bob)), len(cli), bob.text("#main")[:2000])
        first = rows(bob)[0]
        bob.click("#page-next")
        bob.wait(lambda: rows(bob) and rows(bob)[0] != first, "the second page")
        assert len(rows(bob)) == 50
        args = bob.driver.execute_script("return [...document.querySelectorAll('#jobs .mq-args')].map(c => c.textContent)")
        assert args[0] == "n50" and args[-1] == "n99"
        overview_paint, overview_whole = bob.open("/", queue="user")
        assert bob.text("#count-queued .mq-card-value") == "100000"
        assert bob.driver.execute_script("return document.querySelector('#types tr[data-type=echo]').cells[1].textContent") == "100000"
        # Busy: jobs keep coming while the overview's figures take seconds to read (every
        # job's file). The page redraws one at a time (its `miniq stats` beside `miniq list`),
        # never one more per change: before, four redraws and more were reading at once.
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while sum(1 for n in seen if n) < 20 and time.monotonic() < deadline:
            miniq(box, "bob", "enqueue", "echo", f"busy {len(seen)}")
            seen.append(int(box.sh("pgrep -c -u bob -f 'miniq --user (stats|list) ' || true").stdout))
        print(f"the page's miniq at once, at each of {len(seen)} enqueues: {seen}")
        assert sum(1 for n in seen if n) >= 20 and max(seen) <= 2, seen
        from conftest import REPORT

        REPORT.append(
            f"Cockpit, first paint with 100,000 queued jobs (load to data drawn): jobs view {jobs_paint:.2f} s, "
            f"overview's counts {overview_paint:.2f} s, the overview whole (each job's type read) {overview_whole:.2f} s"
        )
        print(REPORT[-1])
        assert bob.console_errors() == []
    finally:
        bob.close()
        box.run(["miniq", "purge", "--all-finished"], user="bob", check=False)
        box.sh("rm -rf ~/.local/state/miniq/queue", user="bob")
