"""The whole tree on real loopback sockets: simulator -> feed -> router -> SQLite, and gateway.

Sockets and threads look idle to an autojump clock, so these run on real time with generous
`fail_after` guards and no exact-time assertions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import sqlalchemy as sa
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.conftest import make_settings
from tradestream.config import Settings
from tradestream.errors import SchemaOutOfDate
from tradestream.feeds.transport import open_upstream
from tradestream.roles import Running, run_service

TIMEOUT_S = 20


@asynccontextmanager
async def service(s: Settings) -> AsyncIterator[Running]:
    """Run the tree; on exit stop it the way a signal does and wait until it has drained."""
    async with trio.open_nursery() as nursery:
        running: Running = await nursery.start(run_service, s)
        try:
            yield running
        finally:
            running.stop()


def open_websocket_url(url: str) -> Any:
    # trio-websocket's own client leaves the socket open when the server closes first;
    # open_upstream owns and closes it (see tradestream/feeds/transport.py).
    return open_upstream(url, connect_timeout_s=5)


async def recv(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(5):
        return msgspec.json.decode(await ws.get_message())


async def send(ws: WebSocketConnection, **msg: object) -> None:
    await ws.send_message(msgspec.json.encode(msg).decode())


def token(running: Running, user: str = "alice") -> str:
    return running.auth.issue(user)


def stored_rows(s: Settings, code: str | None = None) -> list[sa.Row[Any]]:
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        q = "SELECT stock_code, price, change, volume, trade_time FROM stock_prices_realtime"
        if code:
            q += f" WHERE stock_code = '{code}'"
        rows = list(conn.execute(sa.text(q)))
    engine.dispose()
    return rows


# The service exposes counters, not events: poll them. Callers give a budget, the helper owns it.
async def wait_for(predicate: Any, what: str, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 -- polls state that other tasks update
            await trio.sleep(0.02)


async def test_client_gets_price_updates_equal_to_stored_rows(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    updates: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            async with open_websocket_url(f"{running.ws_url}?token={token(running)}") as ws:
                hello = await recv(ws)
                assert hello["type"] == "connected"
                assert hello["user_id"] == "alice"
                await send(ws, type="subscribe", topic="price:005930")
                assert (await recv(ws))["type"] == "subscribed"
                while len(updates) < 10:
                    msg = await recv(ws)
                    assert msg["type"] == "price_update", msg
                    assert msg["symbol"] == "005930"
                    updates.append(msg["data"])
                running.stop()
                # Every received tick is stored before the clients are told to go away.
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        msg = await recv(ws)
                        assert msg["type"] == "price_update"
                assert closed.value.reason.code == 1001
                received = running.router.ticks
                flushed = running.flusher.rows
                events = running.router.events + running.side["forwarded"]  # + slot audits
    assert received > 0
    assert flushed == events
    rows = stored_rows(s)
    assert len(rows) == received  # nothing lost, nothing twice
    by_volume = {r.volume: r for r in stored_rows(s, "005930")}
    for u in updates:
        row = by_volume[u["volume"]]
        assert (row.price, row.change) == (u["price"], u["change"])
    assert len({u["volume"] for u in updates}) == len(updates)


async def test_reconnect_after_upstream_drop_keeps_clients(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            feed = running.feeds[0]
            async with open_websocket_url(f"{running.ws_url}?token={token(running)}") as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="price:005930")
                assert (await recv(ws))["type"] == "subscribed"
                await recv(ws)  # data is flowing
                assert running.sim.control.drop_all() == 1
                await wait_for(lambda: feed.reconnects >= 1, "reconnect")
                dropped_at = trio.current_time()
                ticks_at_drop = running.router.ticks
                await wait_for(lambda: running.router.ticks > ticks_at_drop + 20, "data resumes")
                resumed_in = trio.current_time() - dropped_at
                assert feed.connects == 2
                assert feed.state == "streaming"
                assert feed.subscriptions.get("H0STCNT0:005930") == "subscribed"
                # the client stayed connected, was told about the gap, and gets prices again
                kinds = []
                while not kinds or kinds[-1] != "price_update":
                    kinds.append((await recv(ws))["type"])
                assert "feed_gap" in kinds
    assert resumed_in < 2.0
    assert len(stored_rows(s)) == running.router.ticks  # nothing lost across the reconnect


async def test_stalled_upstream_is_treated_as_dead(tmp_path: Path) -> None:
    s = make_settings(tmp_path, stale_s=0.5)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            feed = running.feeds[0]
            await wait_for(lambda: running.router.ticks > 0, "first data")
            running.sim.control.stall(1.5)
            await wait_for(lambda: feed.reconnects >= 1, "stale detection", timeout=5)
            assert "TooSlowError" in feed.last_error
            before = running.router.ticks
            await wait_for(
                lambda: running.router.ticks > before and feed.state == "streaming",
                "data after the stall",
                timeout=8,
            )


async def test_auth_failures_close_with_4401(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            for query, reason in (("", "missing token"), ("?token=garbage", "invalid token")):
                async with open_websocket_url(running.ws_url + query) as ws:
                    await send(ws, type="subscribe", topic="price:005930")  # not an auth message
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.get_message()
                    assert closed.value.reason.code == 4401
                    assert reason in (closed.value.reason.reason or "")


async def test_client_protocol_errors_and_replies(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            async with open_websocket_url(f"{running.ws_url}?token={token(running)}") as ws:
                await recv(ws)
                await ws.send_message("{not json")
                assert (await recv(ws))["code"] == "invalid_json"
                await send(ws, type="teleport")
                assert (await recv(ws))["code"] == "unknown_type"
                await send(ws, type="subscribe", topic="orders")
                assert (await recv(ws))["code"] == "unknown_topic"
                not_watched = "293490"  # a simulator ticker outside the test watchlist
                assert not_watched not in settings.kis.watchlist
                # client demand: the slot manager registers it upstream for this client
                await send(ws, type="subscribe", topic=f"price:{not_watched}")
                assert (await recv(ws))["type"] == "subscribed"
                while (msg := await recv(ws))["type"] != "price_update":
                    pass
                assert msg["symbol"] == not_watched
                await send(ws, type="unsubscribe", topic=f"price:{not_watched}")
                while (msg := await recv(ws))["type"] == "price_update":
                    pass
                assert msg["type"] == "unsubscribed"
                await send(ws, type="ping", timestamp="2024-01-01T00:00:00")
                assert await recv(ws) == {"type": "pong", "timestamp": "2024-01-01T00:00:00"}
                await send(ws, type="unsubscribe", topic="price:005930")
                assert (await recv(ws))["code"] == "not_subscribed"
                await send(ws, type="subscribe", topic="price:000660")
                assert (await recv(ws))["type"] == "subscribed"
                await send(ws, type="unsubscribe", topic="price:000660")
                while (msg := await recv(ws))["type"] == "price_update":
                    pass
                assert msg == {
                    "type": "unsubscribed",
                    "topic": "price:000660",
                    "message": "Successfully unsubscribed from price:000660",
                }
                # the connection survived every bad message
                await send(ws, type="ping")
                assert (await recv(ws))["type"] == "pong"


async def test_status_endpoint(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            async with open_websocket_url(f"{running.ws_url}?token={token(running, 'bob')}") as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="price:005930")
                await recv(ws)
                await wait_for(lambda: running.feeds[0].state == "streaming", "streaming")
                async with httpx.AsyncClient(base_url=running.url) as http:
                    anonymous = await http.get("/api/ws/status")
                    status = (
                        await http.get("/api/ws/status", params={"token": token(running)})
                    ).json()
                    admin = running.auth.issue("root", role="admin")
                    full = (await http.get("/api/ws/status", params={"token": admin})).json()
    assert anonymous.status_code == 401
    assert status["active_connections"] == 1
    assert "active_users" not in status and status["active_user_count"] == 1
    assert full["active_users"] == ["bob"]  # user ids: admins only
    assert "recent" in full["slots"] and "recent" not in status["slots"]
    assert status["subscriptions"] == {"price:005930": 1}
    assert status["price_streamer_running"] is True
    (upstream,) = status["upstream"]
    assert upstream["state"] == "streaming"
    assert upstream["subscribed"] == len(settings.kis.watchlist)
    assert upstream["errors"] == {}
    assert set(status["queues"]) == {"events", "store"}


async def test_out_of_date_schema_refuses_to_start(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    s = replace(s, store=replace(s.store, auto_upgrade=False))
    with pytest.raises(SchemaOutOfDate, match="tradestream db upgrade"):
        await run_service(s)


async def test_rest_reads(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            await wait_for(lambda: running.flusher.rows >= 300, "stored trades")
            auth = {"Authorization": f"Bearer {token(running)}"}
            async with httpx.AsyncClient(base_url=running.url) as http:
                ticks = await http.get("/api/ticks/005930?limit=5", headers=auth)
                bars = await http.get("/api/bars/005930?interval=1m&limit=5", headers=auth)
                news = await http.get(f"/api/news?token={token(running)}")
                anonymous = await http.get("/api/ticks/005930")
                bad_interval = await http.get("/api/bars/005930?interval=7w", headers=auth)
                bad_code = await http.get("/api/ticks/59", headers=auth)
                bad_since = await http.get("/api/ticks/005930?since=yesterday", headers=auth)
    assert ticks.status_code == 200
    rows = ticks.json()["data"]
    assert 1 <= len(rows) <= 5 and [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    assert bars.status_code == 200
    (bar,) = bars.json()["data"][-1:]
    assert bar["low"] <= bar["close"] <= bar["high"] and bar["trades"] >= 1
    assert news.status_code == 200 and news.json() == {"data": []}  # LS is off in this test
    assert anonymous.status_code == 401 and "missing token" in anonymous.json()["error"]
    assert bad_interval.status_code == bad_code.status_code == bad_since.status_code == 400


async def test_rest_news_is_utf8_and_limits_out_of_range_are_400(tmp_path: Path) -> None:
    s = make_settings(tmp_path, ls=True, sim={"news_rate": 50.0})
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            auth = {"Authorization": f"Bearer {token(running)}"}
            async with httpx.AsyncClient(base_url=running.url, headers=auth) as http:
                news = None
                while news is None or not news.json()["data"]:
                    await trio.sleep(0.05)  # polling the REST read until a story is stored
                    news = await http.get("/api/news?limit=5")
                bad = [
                    await http.get(f"/api/{path}?limit={limit}")
                    for path in ("news", "alerts", "ticks/005930", "bars/005930")
                    for limit in ("0", "1001", "-1", "x")
                ]
                most = await http.get("/api/ticks/005930?limit=1000")
    body = news.content.decode("utf-8")
    assert news.headers["content-type"].startswith("application/json")
    assert "\\u" not in body  # no escapes: Hangul as UTF-8
    assert any(ch >= "\uac00" for ch in body), body[:200]
    assert [r.status_code for r in bad] == [400] * len(bad)
    assert all("from 1 to 1000" in r.json()["error"] for r in bad)
    assert most.status_code == 200


async def test_server_heartbeat_keeps_answering_clients_and_drops_silent_ones(
    settings: Settings,
) -> None:
    s = replace(
        settings, gateway=replace(settings.gateway, ping_interval_s=0.2, max_missed_pongs=2)
    )
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={token(running)}"
            async with open_websocket_url(url) as silent, open_websocket_url(url) as polite:
                await recv(silent)
                await recv(polite)
                pings = 0
                while pings < 5:  # the polite client answers every ping
                    msg = await recv(polite)
                    assert msg["type"] == "ping" and msg["timestamp"]
                    await send(polite, type="pong")
                    pings += 1
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        assert (await recv(silent))["type"] == "ping"
                assert closed.value.reason.code == 4002
                await send(polite, type="ping")
                while (msg := await recv(polite))["type"] == "ping":
                    await send(polite, type="pong")
                assert msg["type"] == "pong"
