"""Browser tests: the dashboard (gateway/dashboard.py) in headless Chromium.

Debian's Chromium (/usr/bin/chromium; .ci/run installs it) driven by Playwright's sync API
through its executable path: no browser download. The service runs as `tradestream run`, a
process of its own with the built-in simulator, so a test can kill it and start it again on
the same port. The tests are plain functions: Playwright's sync API runs its own event loop
and must stay outside Trio's.

Without Playwright or Chromium the tests are skipped, saying why; in CI they fail.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tradestream.gateway.auth import Authenticator

CHROMIUM = os.environ.get("TRADESTREAM_TEST_CHROMIUM", "/usr/bin/chromium")
SECRET = "browser-test-secret-browser-test-secret"
SCREENSHOTS = Path("/tmp/tradestream-screenshots")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
START_S = 30.0  # for the service's banner
# What Chromium itself reports while the server is away (a refused socket or request): the
# only console errors a test that stops the service accepts, and only while it is stopped.
NETWORK_ERRORS = re.compile(
    r"WebSocket connection to .* failed|net::ERR_CONNECTION_(REFUSED|RESET|CLOSED)|"
    r"Failed to load resource"
)


def unavailable(reason: str) -> None:
    # as tests/conftest.py does for the database servers: in CI a missing browser is a failure
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def token(user: str = "browser", role: str = "user") -> str:
    return Authenticator(SECRET).issue(user, role=role)


# -- the service as a process ---------------------------------------------------------------


def service_env(cwd: Path, *, secret: str | None = SECRET) -> dict[str, str]:
    """The environment of `tradestream run` here: no TRADESTREAM_* from outside, SQLite in
    `cwd`, the simulator, and `secret` (None: the process makes one up, the dev mode)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESTREAM_")}
    env.update(
        {
            "TRADESTREAM_DATABASE_URL": f"sqlite:///{cwd / 'ts.db'}",
            "TRADESTREAM_DB_AUTO_UPGRADE": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if secret is not None:
        env["TRADESTREAM_JWT_SECRET"] = secret
    return env


@dataclass
class Service:
    """`tradestream run` in `cwd`; start() waits for its banner, kill() ends it at once."""

    cwd: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""  # http://127.0.0.1:PORT
    sim_url: str = ""  # the built-in simulator's REST base (POST /sim/faults)
    port: int = 0
    banner: list[str] = field(default_factory=list)
    starts: int = 0

    def start(self, port: int = 0) -> None:
        """Start on `port` (0: any free one; the port is kept for a restart)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with open(self.cwd / f"stderr-{self.starts}.log", "wb") as err:  # the child keeps it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tradestream", "run"],
                env={**self.env, "TRADESTREAM_PORT": str(port)},
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self.proc, lines), daemon=True).start()
        self.banner = []
        deadline = time.monotonic() + START_S
        while not self.url_in_banner():
            remaining = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                line = None
                remaining = 0
            if line is None:
                self.kill()
                log = (self.cwd / f"stderr-{self.starts}.log").read_text(errors="replace")
                reason = "no banner in time" if remaining <= 0 else "the process ended"
                pytest.fail(f"tradestream run: {reason}:\n{''.join(self.banner)}\n{log[-3000:]}")
            self.banner.append(line)

    def url_in_banner(self) -> bool:
        text = "".join(self.banner)
        up = re.search(r"tradestream is up: (http://\S+)", text)
        sim = re.search(r"built-in broker simulator at (http://\S+)", text)
        if up is None or sim is None or "Ctrl-C stops" not in text:
            return False
        self.url, self.sim_url = up.group(1), sim.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        return True

    def kill(self) -> None:
        """SIGKILL: the service is gone at once, its sockets reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGINT, as Ctrl-C: drained and stored; killed if it takes longer than 30 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def _pump(proc: subprocess.Popen[bytes], out: queue.Queue[str | None]) -> None:
    """The child's stdout, line by line, until it closes (then None)."""
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            out.put(raw.decode(errors="replace"))
    out.put(None)


def started(tmp: Path, *, secret: str | None = SECRET) -> Service:
    tmp.mkdir(parents=True, exist_ok=True)
    svc = Service(tmp, service_env(tmp, secret=secret))
    svc.start()
    return svc


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the tests that only read and post (each uses codes of its own)."""
    svc = started(tmp_path_factory.mktemp("service"))
    yield svc
    svc.stop()


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright is not installed (pip install playwright; no browser download)")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Console:
    """What the page said on its console (errors) and what it threw."""

    errors: list[tuple[float, str]] = field(default_factory=list)

    def record(self, kind: str, text: str) -> None:
        self.errors.append((time.monotonic(), f"{kind}: {text}"))

    def assert_clean(self, *, outage: tuple[float, float] | None = None) -> None:
        """No error at all, or (with `outage`, monotonic start and end) only Chromium's own
        network errors while the service was away."""
        bad = [
            text
            for at, text in self.errors
            # Chromium's note that the server's frames were still in flight when the page
            # closed its own socket (a new token, a reconnect): the page did nothing wrong
            if not text.endswith("Data frame received after close")
            and not (
                outage is not None
                and outage[0] <= at <= outage[1]
                and text.startswith("console: ")
                and NETWORK_ERRORS.search(text)
            )
        ]
        assert bad == [], "console errors:\n" + "\n".join(bad)


@pytest.fixture
def page_and_console(browser: Any) -> Iterator[tuple[Any, Console]]:
    """A fresh browser context (empty localStorage) at desktop size; the console collected."""
    ctx = browser.new_context(viewport=DESKTOP, device_scale_factor=1)
    page = ctx.new_page()
    console = Console()
    page.on("console", lambda m: console.record("console", m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console.record("pageerror", str(exc)))
    page.set_default_timeout(10_000)
    try:
        yield page, console
    finally:
        ctx.close()


def with_token(page: Any, jwt: str) -> None:
    """The page finds `jwt` in localStorage at load, as a returning user's browser would."""
    page.add_init_script(
        f"localStorage.setItem('tradestream.token', {json.dumps(jwt)});"
        "localStorage.setItem('tradestream.token.dev', '0');"
    )


def save_screenshot(page: Any, dest: Path, name: str, *, full_page: bool = False) -> Path:
    """Into `dest` (the test's tmp_path) and a copy in /tmp/tradestream-screenshots/."""
    path = dest / name
    page.screenshot(path=str(path), full_page=full_page)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    copy = SCREENSHOTS / name
    shutil.copyfile(path, copy)
    print(f"screenshot: {copy} (also {path})")
    return copy
