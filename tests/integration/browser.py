"""A real browser on the sandbox's network: Debian's chromium, headless,
driven by selenium through Debian's chromedriver.

The sandbox has a network namespace of its own (Cockpit listens on its
127.0.0.1:9090).  The test process's own thread joins that namespace while
it starts chromedriver (which starts chromium) and for as long as it talks
to it, so the browser, the driver and the test all see the sandbox's
loopback; files, processes and everything else stay the host's.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextmanager
def network_of(pid: int) -> Iterator[None]:
    """This thread in the network namespace of process ``pid``, then back."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)


class Browser:
    """One chromium session: log in to Cockpit, open miniq's page, look at it."""

    def __init__(self, base: str, screenshots: Path, width: int = 1280, height: int = 900, dark: bool = False) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        args = ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}",
                "--no-first-run", "--password-store=basic"]  # fmt: skip
        if dark:
            args.append("--blink-settings=preferredColorScheme=0")
        for arg in args:
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.driver.set_page_load_timeout(60)
        self.base = base
        self.screenshots = screenshots

    def close(self) -> None:
        self.driver.quit()

    def login(self, user: str, password: str) -> None:
        from selenium.webdriver.common.by import By

        d = self.driver
        d.get(self.base + "/")
        self.wait(lambda: d.find_elements(By.ID, "login-user-input"), "the login page")
        d.find_element(By.ID, "login-user-input").send_keys(user)
        d.find_element(By.ID, "login-password-input").send_keys(password)
        d.find_element(By.ID, "login-button").click()
        self.wait(lambda: "/system" in d.current_url or d.find_elements(By.ID, "content"), "the shell after login")
        d.get_log("browser")  # what the login page logged (its 401 before the password): not the page's

    def open(self, fragment: str = "/", queue: str = "user") -> tuple[float, float]:
        """The page alone (as the shell frames it), at ``#fragment``: seconds
        until its first data was drawn (the overview: its counts) and until all was."""
        d = self.driver
        d.get("about:blank")  # a new load, not a move within the page
        started = time.monotonic()
        sep = "&" if "?" in fragment else "?"
        d.get(f"{self.base}/cockpit/@localhost/miniq/index.html#{fragment}{sep}queue={queue}")
        painted = None
        while d.execute_script("return document.body.dataset.ready") != "true":
            if painted is None and d.execute_script("return document.body.dataset.painted") == "true":
                painted = time.monotonic() - started
            assert time.monotonic() - started < 120, f"the page's data did not come: {d.current_url}"
            time.sleep(0.02)
        done = time.monotonic() - started
        return (done if painted is None else painted), done

    def go(self, fragment: str, queue: str) -> None:
        """Another view of the same page, by its location (no reload)."""
        sep = "&" if "?" in fragment else "?"
        script = "document.body.dataset.ready = 'false'; window.location.hash = arguments[0]"
        self.driver.execute_script(script, f"{fragment}{sep}queue={queue}")
        self.wait(lambda: self.driver.execute_script("return document.body.dataset.ready === 'true'"), f"the view {fragment}")

    def wait(self, condition: Any, what: str, timeout: float = 30, poll: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                found = condition()
                if found:
                    return found
            except Exception as e:  # noqa: BLE001 - a stale element while the page redraws: look again
                last = e
            time.sleep(poll)
        raise AssertionError(f"timed out after {timeout} s waiting for {what} ({last!r}) at {self.driver.current_url}")

    def _now(self, css: str, act: Callable[[Any], T]) -> T:
        """``act`` on the element ``css`` is now, once it can be acted on. The page redraws
        a view whole (an action's own refresh, a watched file's), so an element found a
        moment ago may be gone, and one just drawn (a dialog as it opens) may not take a
        click yet; nothing was done to either, so look it up again, for up to 5 s."""
        from selenium.common.exceptions import ElementNotInteractableException, StaleElementReferenceException
        from selenium.webdriver.common.by import By

        last: Exception | None = None
        for _ in range(100):
            try:
                return act(self.driver.find_element(By.CSS_SELECTOR, css))
            except (StaleElementReferenceException, ElementNotInteractableException) as e:
                last = e
                time.sleep(0.05)
        raise AssertionError(f"{css} could not be acted on for 5 s ({last!r}) at {self.driver.current_url}")

    def text(self, css: str) -> str:
        return self._now(css, lambda element: str(element.text))

    def click(self, css: str) -> None:
        self._now(css, lambda element: element.click())

    def type(self, css: str, text: str) -> None:
        """Keys sent to ``css`` (WebDriver gives it the focus first), as a person types them."""
        self._now(css, lambda element: element.send_keys(text))

    def clear(self, css: str) -> None:
        self._now(css, lambda element: element.clear())

    def confirm(self) -> None:
        self.wait(lambda: self.driver.execute_script("return document.getElementById('confirm').open"), "the confirmation")
        self.click("#confirm-yes")

    def console_errors(self) -> list[str]:
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE" and "favicon" not in e["message"]]

    def shot(self, name: str) -> Path:
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path
