"""Headless Chromium driven over the DevTools protocol on a pipe: no websocket, no port, no extra packages.

`--remote-debugging-pipe` makes Chromium read NUL-terminated JSON commands from fd 3 and write responses
and events to fd 4. `Chromium` starts the browser with a fresh profile, `open_page` loads a URL in a new
tab and collects console errors, uncaught exceptions, log errors and every network request, evaluates
JavaScript checks and optionally saves a full-page screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary ($SPILLOVER_CHROMIUM first), or None."""
    override = os.environ.get("SPILLOVER_CHROMIUM")
    if override:
        return shutil.which(override)
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for path in map(shutil.which, names) if path), None)


@dataclass
class PageResult:
    """What happened while a page loaded: errors, requests, the values of the checks, the screenshot."""

    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    ready: bool = False


def _high_fd(fd: int) -> int:
    """Move `fd` to a number >= 10 (close-on-exec) so redirecting it to 3/4 in the child cannot clash."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Chromium:
    """A headless browser process; use as a context manager. All waits are bounded by `timeout`."""

    def __init__(self, binary: str, *, timeout: float = 20.0) -> None:
        self.binary, self.timeout = binary, timeout
        self._next_id, self._buffer, self._events = 0, b"", []

    def __enter__(self) -> Chromium:
        self.profile = Path(tempfile.mkdtemp(prefix="spillover-chromium-"))
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        cmd_r, res_w = _high_fd(cmd_r), _high_fd(res_w)
        self._log = open(self.profile / "chromium.log", "wb")  # noqa: SIM115 - closed in __exit__
        args = [*FLAGS, f"--user-data-dir={self.profile / 'profile'}", "about:blank"]

        def wire_pipes() -> None:  # runs in the child between fork and exec
            os.dup2(cmd_r, 3)
            os.dup2(res_w, 4)

        # close_fds=False: fds 3/4 are made in preexec and would be closed otherwise; every other fd the
        # test process holds is close-on-exec (PEP 446), so nothing else leaks into the browser.
        self.process = subprocess.Popen(
            [self.binary, *args],
            preexec_fn=wire_pipes,
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        os.close(cmd_r)
        os.close(res_w)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, TimeoutError, RuntimeError):
            self.send("Browser.close", timeout=5.0)
        try:
            self.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5.0)
        for fd in (self._cmd_w, self._res_r):
            os.close(fd)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, n_chars: int = 3000) -> str:
        """The end of Chromium's own stderr/stdout, for failure messages."""
        self._log.flush()
        return (self.profile / "chromium.log").read_text(errors="replace")[-n_chars:]

    def send(
        self,
        method: str,
        params: dict | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> dict:
        """Send one command and wait for its result; events seen meanwhile are kept for `events`."""
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_w, data) :]
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def wait_event(self, method: str, session: str | None, timeout: float) -> dict:
        """Wait for (or find an already received) event `method` on `session`."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self._events.append(self._read(deadline))

    def take_events(self) -> list[dict]:
        events, self._events = self._events, []
        return events

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no DevTools message in time; chromium log:\n{self.log_tail()}")
            ready, _, _ = select.select([self._res_r], [], [], left)
            if ready:
                chunk = os.read(self._res_r, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe; log:\n{self.log_tail()}")
                self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)


def _record(result: PageResult, event: dict) -> None:
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        result.console_errors.append(
            " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
        )
    elif method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        result.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
    elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
        result.log_errors.append(params["entry"].get("text", ""))
    elif method == "Network.requestWillBeSent":
        result.requests.append(params["request"]["url"])


def _evaluate(browser: Chromium, session: str, expression: str) -> object:
    reply = browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
    if "exceptionDetails" in reply:
        raise RuntimeError(f"evaluating {expression!r}: {reply['exceptionDetails']}")
    return reply["result"].get("value")


def open_page(
    browser: Chromium,
    url: str,
    *,
    ready: str = "document.readyState === 'complete'",
    checks: dict[str, str] | None = None,
    width: int = 1400,
    height: int = 2400,
    screenshot: Path | None = None,
    settle: float = 0.3,
) -> PageResult:
    """Load `url` in a new tab, poll the JS expression `ready` until truthy, then evaluate `checks`.

    `settle` seconds after ready lets late errors arrive. A screenshot, if asked, covers the full page.
    """
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.send(f"{domain}.enable", session=session)
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    browser.send("Emulation.setDeviceMetricsOverride", metrics, session)
    browser.send("Page.navigate", {"url": url}, session)
    browser.wait_event("Page.loadEventFired", session, browser.timeout)
    result, deadline = PageResult(), time.monotonic() + browser.timeout
    while not (is_ready := bool(_evaluate(browser, session, ready))) and time.monotonic() < deadline:
        time.sleep(0.1)
    result.ready = is_ready
    time.sleep(settle)
    result.values = {name: _evaluate(browser, session, js) for name, js in (checks or {}).items()}
    if screenshot is not None:
        _screenshot(browser, session, width, screenshot)
    for event in browser.take_events():
        if event.get("sessionId") == session:
            _record(result, event)
    return result


def _screenshot(browser: Chromium, session: str, width: int, path: Path) -> None:
    """Full-page PNG: the viewport is grown to the content height first, so sticky/100vh elements fill it."""
    size = browser.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
    height = int(size["height"])
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        session,
    )
    time.sleep(0.3)  # responsive plots re-layout on resize
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip}, session)
    path.write_bytes(base64.b64decode(shot["data"]))
