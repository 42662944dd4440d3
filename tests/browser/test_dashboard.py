"""The dashboard at / in headless Chromium against `tradestream run` with the simulator.

Every wait is for a condition on the page (Playwright's expect / wait_for_function) within a
budget; nothing sleeps and hopes. Screenshots go to the test's tmp_path and to
/tmp/tradestream-screenshots/ (printed with -s).
"""

from __future__ import annotations

import json
import re
import time
import tomllib
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest

from tests.browser.conftest import (
    DESKTOP,
    PHONE,
    Console,
    Service,
    save_screenshot,
    started,
    token,
    with_token,
)
from tradestream.config import GatewaySettings, from_env
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.dashboard import ASSETS, PAGE, STATIC

ROOT = Path(__file__).resolve().parents[2]

# the code of a row whose price cell has been filled and then updated by a later tick (the
# first value is the subscription's snapshot)
UPDATED_ROW = """() => {
  for (const tr of document.querySelectorAll('#prices tbody tr')) {
    const price = tr.querySelector('td.price').textContent.trim();
    if (Number(tr.dataset.updates) >= 2 && /^[0-9][0-9,]*$/.test(price)) return tr.dataset.code;
  }
  return null;
}"""
TOTAL_UPDATES = """() => [...document.querySelectorAll('#prices tbody tr')]
  .reduce((n, tr) => n + Number(tr.dataset.updates), 0)"""


def expect(target: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(target)


def open_dashboard(page: Any, svc: Service) -> None:
    with_token(page, token())
    page.goto(svc.url + "/")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)


def jump(svc: Service, code: str, pct: float) -> None:
    """The simulator's next trades of `code` move `pct` percent: a sudden-move alert."""
    r = httpx.post(f"{svc.sim_url}/sim/faults", json={"jump": {"code": code, "pct": pct}})
    r.raise_for_status()


def post_signal(svc: Service, kind: str, item: dict[str, Any]) -> None:
    producer = {"Authorization": f"Bearer {token('bot', role='producer')}"}
    r = httpx.post(f"{svc.url}/api/signals/{kind}", json={"signals": [item]}, headers=producer)
    assert r.status_code == 200, r.text


# -- the page ----------------------------------------------------------------------------------


def test_ticks_show_within_two_seconds_of_loading(
    service: Service, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    with_token(page, token())
    t0 = time.monotonic()
    page.goto(service.url + "/")
    budget_ms = 2000 - (time.monotonic() - t0) * 1000
    code = page.wait_for_function(UPDATED_ROW, timeout=max(budget_ms, 1)).json_value()
    elapsed = time.monotonic() - t0
    print(f"a price cell updated {elapsed * 1000:.0f} ms after the page was asked for")
    assert elapsed < 2.0
    row = page.locator(f'#prices tr[data-code="{code}"]')
    expect(row.locator("td.price")).to_have_text(re.compile(r"^[0-9][0-9,]*$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # every watched code gets a row, with its name from the slot listing
    expect(page.locator('#prices tr[data-code="005930"] .nm')).to_have_text("Samsung Electronics")
    # the indexes and the gate
    expect(page.locator("#idx-kospi .value")).not_to_have_text("–")
    expect(page.locator("#gate")).not_to_have_attribute("data-level", "none")
    console.assert_clean()


def test_a_row_click_shows_its_order_book(
    service: Service, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    open_dashboard(page, service)
    page.locator('#prices tr[data-code="005930"]').click()
    expect(page.locator('#prices tr[data-code="005930"]')).to_have_class(
        re.compile(r"\bselected\b")
    )
    expect(page.locator("#book-title")).to_contain_text("005930")
    # ten asks above ten bids, prices on the KRX grid, asks above the bids
    asks = page.locator("#book tr.ask td.price-cell")
    bids = page.locator("#book tr.bid td.price-cell")
    expect(asks.last).not_to_have_text("")
    expect(bids.first).not_to_have_text("")

    def krw(text: str) -> int:
        return int(text.replace(",", ""))

    assert krw(asks.last.inner_text()) > krw(bids.first.inner_text())
    console.assert_clean()


def test_an_alert_and_signals_appear_as_they_arrive(
    service: Service, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    open_dashboard(page, service)
    code = "035420"  # this test's own code: alerts are debounced per code and direction
    selector = f'#alerts li[data-code="{code}"][data-direction="up"]'
    before = page.locator(selector).count()  # a move of the simulator's own, if any
    jump(service, code, 7)
    page.wait_for_function(
        f"() => document.querySelectorAll({json.dumps(selector)}).length > {before}",
        timeout=15_000,
    )
    alert = page.locator(selector).first  # newest first
    expect(alert).to_contain_text(f"{code} +")
    expect(alert).to_contain_text("NAVER")  # the name, from the slot listing

    marker = f"browser test {uuid.uuid4().hex[:8]}"
    post_signal(
        service,
        "vcp",
        {"symbol": "005930", "score": 0.87, "price": 71000, "reason": f"VCP {marker}"},
    )
    vcp = page.locator('#signals li[data-kind="vcp"]', has_text=marker)
    expect(vcp).to_have_count(1)
    expect(vcp).to_contain_text("Samsung Electronics 005930")
    expect(vcp).to_contain_text("score 0.87")
    post_signal(service, "daytrading", {"symbol": "000660", "reason": f"day {marker}"})
    day = page.locator('#signals li[data-kind="daytrading"]', has_text=marker)
    expect(day).to_have_count(1)
    # newest first
    expect(page.locator("#signals li").first).to_contain_text(f"day {marker}")

    # a new visit lists the stored alert again (REST /api/alerts), newest first
    page.reload()
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator(selector)).to_have_count(before + 1)
    console.assert_clean()


def test_a_dropped_connection_resumes_the_lossless_topics_where_it_left_them(
    service: Service, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    sockets: list[Any] = []

    def through(ws: Any) -> None:  # the page's sockets, passed on to the server
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(re.compile(r"/ws\?"), through)
    open_dashboard(page, service)
    marker = f"resume {uuid.uuid4().hex[:8]}"
    post_signal(service, "vcp", {"symbol": "005930", "reason": f"before {marker}"})
    expect(page.locator("#signals li", has_text=f"before {marker}")).to_have_count(1)

    sockets[0].close(code=4000, reason="dropped by the test")  # the server stays up
    conn = page.locator("#conn")
    expect(conn).to_have_attribute("data-recovery", "recovered")  # since: same epoch
    expect(conn).to_have_attribute("data-state", "live")
    assert len(sockets) == 2
    post_signal(service, "vcp", {"symbol": "005930", "reason": f"after {marker}"})
    expect(page.locator("#signals li", has_text=f"after {marker}")).to_have_count(1)
    # resumed after the last message seen: nothing twice
    expect(page.locator("#signals li", has_text=f"before {marker}")).to_have_count(1)
    console.assert_clean()


def test_a_feed_gap_and_the_sessions_reconnects_show_in_the_operations_panel(
    service: Service, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    open_dashboard(page, service)
    expect(page.locator('#ops-upstream tr[data-session="kis-1"]')).to_be_visible()
    r = httpx.post(f"{service.sim_url}/sim/faults", json={"drop": True})  # every session
    r.raise_for_status()
    gap = page.locator('#gaps li[data-source^="kis-"]')
    expect(gap.first).to_be_visible(timeout=15_000)
    expect(gap.first).to_contain_text("no data for")
    # the next poll of /api/ws/status counts the reconnect
    reconnects = page.locator('#ops-upstream tr[data-session="kis-1"] td').nth(2)
    expect(reconnects).not_to_have_text("0", timeout=15_000)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")  # clients stay
    console.assert_clean()


def test_a_configured_secret_asks_for_a_token_and_the_page_carries_none(
    service: Service, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    page.goto(service.url + "/")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "login")
    config = page.evaluate("JSON.parse(document.getElementById('config').textContent)")
    assert config["devToken"] is None
    assert config["maxSubscriptions"] == GatewaySettings.max_subscriptions
    assert re.search(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+", page.content()) is None  # no JWT

    page.fill("#token-input", "not a token")
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("not a JWT")
    # signed with another secret: the socket refuses it (4401) and the form says so
    page.fill("#token-input", Authenticator("another-secret-another-secret-another").issue("x"))
    page.click("#login-submit")
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#conn")).to_have_attribute("data-state", "login")

    good = token("alice")
    page.fill("#token-input", good)
    page.click("#login-submit")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#user")).to_have_text("alice (user)")
    assert page.evaluate("localStorage.getItem('tradestream.token')") == good
    page.reload()  # kept: no sign-in the next time
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator("#login")).to_be_hidden()
    console.assert_clean()


def test_the_simulators_dev_mode_fills_in_a_token(
    tmp_path: Path, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    svc = started(tmp_path, secret=None)  # no TRADESTREAM_JWT_SECRET: the banner's dev mode
    try:
        assert any("No TRADESTREAM_JWT_SECRET set" in line for line in svc.banner)
        page.goto(svc.url + "/")
        expect(page.locator("#conn")).to_have_attribute("data-state", "live")
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#user")).to_have_text("dashboard (user)")
        page.wait_for_function(UPDATED_ROW)
        console.assert_clean()
    finally:
        svc.stop()


def test_a_restart_shows_reconnecting_then_ticks_flow_again(
    tmp_path: Path, page_and_console: tuple[Any, Console]
) -> None:
    page, console = page_and_console
    svc = started(tmp_path)
    try:
        open_dashboard(page, svc)
        page.wait_for_function(UPDATED_ROW)
        conn = page.locator("#conn")

        outage_from = time.monotonic()
        svc.kill()
        expect(conn).to_have_attribute("data-state", "reconnecting", timeout=5000)
        expect(conn).to_contain_text("reconnecting")
        expect(conn).to_contain_text("disconnected")

        svc.start(port=svc.port)  # the same address: the page's own backoff finds it
        t_back = time.monotonic()
        expect(conn).to_have_attribute("data-state", "live", timeout=20_000)
        outage_to = time.monotonic()
        print(f"live again {outage_to - t_back:.2f} s after the service was back")
        # another process: the lossless topics could not be resumed, the lists were re-read
        expect(conn).to_have_attribute("data-recovery", "reloaded")
        before = page.evaluate(TOTAL_UPDATES)
        page.wait_for_function(f"() => ({TOTAL_UPDATES})() > {before}", timeout=5000)
        console.assert_clean(outage=(outage_from, outage_to))
    finally:
        svc.stop()


def test_screenshots_at_desktop_and_phone_widths(
    service: Service, page_and_console: tuple[Any, Console], tmp_path: Path
) -> None:
    page, console = page_and_console
    open_dashboard(page, service)
    code = "005380"  # this test's own alert
    jump(service, code, 6)
    post_signal(
        service,
        "vcp",
        {"symbol": "000660", "score": 0.74, "price": 180000, "reason": "VCP: 18% > 9% > 4%"},
    )
    page.locator('#prices tr[data-code="005930"]').click()
    expect(page.locator(f'#alerts li[data-code="{code}"]').first).to_be_visible(timeout=15_000)
    expect(page.locator("#signals li").first).to_be_visible()
    expect(page.locator("#book tr.bid td.price-cell").first).not_to_have_text("")
    expect(page.locator("#ops-upstream tbody tr").first).to_be_visible()
    expect(page.locator("#ops-slots .session").first).to_be_visible()
    page.wait_for_function(
        "() => document.querySelectorAll('#prices td.spark polyline[points]').length > 10"
    )

    # desktop: the table on the left, the book beside it, nothing wider than the window
    assert page.viewport_size == DESKTOP
    prices = page.locator("section.prices").bounding_box()
    book = page.locator("section.book").bounding_box()
    assert book["x"] > prices["x"] + prices["width"] - 1 and abs(book["y"] - prices["y"]) < 2
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    desktop = save_screenshot(page, tmp_path, "dashboard-desktop-1280x800.png")
    desktop_full = save_screenshot(
        page, tmp_path, "dashboard-desktop-1280-full.png", full_page=True
    )

    # phone: one column, the book under the table, no sideways scrolling
    page.set_viewport_size(PHONE)
    expect(page.locator("#prices th.vol")).to_be_hidden()
    prices = page.locator("section.prices").bounding_box()
    book = page.locator("section.book").bounding_box()
    assert book["y"] >= prices["y"] + prices["height"] - 1 and abs(book["x"] - prices["x"]) < 2
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    phone = save_screenshot(page, tmp_path, "dashboard-phone-390x844.png")
    phone_full = save_screenshot(page, tmp_path, "dashboard-phone-390-full.png", full_page=True)
    for shot in (desktop, desktop_full, phone, phone_full):
        assert shot.stat().st_size > 10_000
    console.assert_clean()


# -- the route, without a browser ------------------------------------------------------------


def test_the_page_and_its_assets_are_served_with_a_strict_policy(service: Service) -> None:
    with httpx.Client(base_url=service.url) as http:
        page = http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        csp = page.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "default-src 'none'" in csp
        assert '"devToken":null' in page.text
        for name, kind in ASSETS.items():
            asset = http.get(f"/dashboard/{name}")
            assert asset.status_code == 200 and asset.headers["content-type"] == kind
        assert http.get("/dashboard/../app.py").status_code == 404
        assert http.get("/dashboard/nothing.js").status_code == 404


@pytest.mark.parametrize(
    ("env", "generated", "allowed"),
    [
        ({}, True, True),  # `just run`: no secret, the simulator
        ({}, False, False),  # a secret configured
        (  # a real broker
            {
                "TRADESTREAM_KIS_WS_URL": "ws://broker.invalid:21000",
                "TRADESTREAM_KIS_REST_URL": "https://broker.invalid:9443",
            },
            True,
            False,
        ),
        (  # a gateway fed over Redis runs no simulator
            {"TRADESTREAM_ROLE": "gateway", "TRADESTREAM_REDIS_URL": "redis://127.0.0.1:6379"},
            True,
            False,
        ),
    ],
)
def test_a_dev_token_only_with_a_made_up_secret_and_the_simulator(
    env: dict[str, str], generated: bool, allowed: bool
) -> None:
    base = {} if generated else {"TRADESTREAM_JWT_SECRET": "x" * 32}
    assert from_env({**base, **env}).gateway.dev_token is allowed


def test_package_data_ships_the_dashboard() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["tradestream"]
    for name in (PAGE, *ASSETS):
        assert (STATIC / name).is_file()
        path = PurePosixPath("gateway", "static", name)
        assert any(
            len(PurePosixPath(g).parts) == len(path.parts) and path.match(g) for g in globs
        ), f"{path} is not in [tool.setuptools.package-data]"
