"""Clients never slow intake or storage (issue 13, item 5): with many sockets that are full or
read slowly, the router keeps up with the feed, price topics conflate instead of queueing,
every trade is stored, and a client that reads keeps getting prices."""

from __future__ import annotations

import contextlib
from pathlib import Path

import sqlalchemy as sa
import trio
from trio_websocket import WebSocketConnection

from tests.conftest import make_settings
from tests.e2e.test_gateway import gw, recv_type, tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream import topics
from tradestream.store import schema
from tradestream.store.writer import make_engine

STALLED = 30  # never read again after subscribing: their sockets fill up
SLOW = 30  # read one message every 50 ms
LAG_SAMPLES = 3_000  # router batches observed while the clients are behind


async def _subscribe_all(ws: WebSocketConnection, codes: tuple[str, ...]) -> None:
    await recv(ws)  # connected
    for code in codes:
        await send(ws, type="subscribe", topic=topics.price(code))
    for _ in codes:
        await recv_type(ws, "subscribed")


async def test_full_and_slow_sockets_never_starve_intake_or_storage(tmp_path: Path) -> None:
    # writes to a full socket wait (no drop) for the whole test: every stalled socket stays busy
    s = gw(make_settings(tmp_path, sim={"tick_rate": 2000.0}), send_timeout_s=120.0)
    codes = s.kis.watchlist
    with trio.fail_after(TIMEOUT_S + 60):
        async with service(s) as running, contextlib.AsyncExitStack() as stack:
            await wait_for(lambda: running.router.ticks > 0, "trades")
            clients: list[WebSocketConnection] = []
            for i in range(STALLED + SLOW + 1):
                url = f"{running.ws_url}?token={tok(running, f'user-{i}')}"
                ws = await stack.enter_async_context(open_websocket_url(url))
                await _subscribe_all(ws, codes)
                clients.append(ws)
            slow, good = clients[STALLED:-1], clients[-1]
            received = 0

            async def read_slowly(ws: WebSocketConnection) -> None:
                while True:
                    await ws.get_message()
                    await trio.sleep(0.05)

            async def read_all() -> None:
                nonlocal received
                while True:
                    await good.get_message()
                    received += 1

            async with trio.open_nursery() as readers:
                for ws in slow:
                    readers.start_soon(read_slowly, ws)
                readers.start_soon(read_all)
                # once every stalled socket is full, observe the router afresh
                await wait_for(
                    lambda: sum(len(c.outbox) > 0 for c in running.hub.clients.values()) >= STALLED,
                    "stalled sockets full",
                    timeout=30,
                )
                running.router.lag_ns.clear()
                ticks0, conflated0, received0 = (
                    running.router.ticks,
                    running.hub.conflated_total(),
                    received,
                )
                await wait_for(
                    lambda: len(running.router.lag_ns) >= LAG_SAMPLES, "router batches", 60
                )
                lag = running.router.intake_lag_ms()
                queued = [len(c.outbox) for c in running.hub.clients.values()]
                routed = running.router.ticks - ticks0
                conflated = running.hub.conflated_total() - conflated0
                got = received - received0
                readers.cancel_scope.cancel()
        stored_expected = running.router.ticks
    # intake kept up: upstream receive -> routed stayed short while the clients were behind
    assert lag["p99"] is not None and lag["p99"] <= 100, lag
    assert routed >= LAG_SAMPLES, routed
    # the backlog stayed bounded and conflated: at most one pending update per topic
    assert max(queued) <= len(codes), queued
    assert conflated > 0
    # a client that reads got prices all along
    assert got > 0
    # every trade routed was stored
    engine = make_engine(s.store.url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(sa.func.count()).select_from(schema.stock_prices_realtime)
        ).scalar_one()
    engine.dispose()
    assert rows == stored_expected
