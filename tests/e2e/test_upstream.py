"""The feed session against a minimal WebSocket server standing in for the broker.

The double speaks just enough KIS (ignores registrations, sends one trade frame) to show what
the broker sees: a cancelled feed closes its socket with code 1000, not an abnormal 1006.
"""

from __future__ import annotations

from datetime import datetime

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from tradestream.config import KisSettings
from tradestream.events import KST, Event
from tradestream.feeds.kis.adapter import KisAdapter, kis_timing
from tradestream.feeds.session import FeedStatus, run_feed
from tradestream.sim.market import DEFAULT_TICKERS, SimMarket, data_frame


async def test_cancelled_feed_closes_upstream_with_1000(nursery: trio.Nursery) -> None:
    closes: list[int] = []
    closed = trio.Event()
    registrations: list[str] = []
    frame = data_frame(
        "H0STCNT0",
        [SimMarket(DEFAULT_TICKERS[:1], seed=1).trade(datetime(2025, 1, 2, 9, 30, tzinfo=KST))],
    )

    async def broker(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            registrations.append(await ws.get_message())
            await ws.send_message(frame)
            while True:
                await ws.get_message()
        except ConnectionClosed as exc:
            closes.append(exc.reason.code)
            closed.set()

    server = await nursery.start(serve_websocket, broker, "127.0.0.1", 0, None)
    cfg = KisSettings(
        ws_url=f"ws://127.0.0.1:{server.port}/tryitout",
        rest_url="http://unused",
        approval_key="preissued-key",
        watchlist=("005930",),
    )
    ticks_out, ticks_in = trio.open_memory_channel[Event](10)
    status = FeedStatus("kis-test")
    with trio.fail_after(10):
        async with trio.open_nursery() as feed:
            await feed.start(
                run_feed, KisAdapter(cfg, "kis-test"), ticks_out, status, kis_timing(cfg)
            )
            tick = await ticks_in.receive()
            feed.cancel_scope.cancel()
        await closed.wait()
    assert tick.code == DEFAULT_TICKERS[0].code
    assert '"approval_key":"preissued-key"' in registrations[0]
    assert closes == [1000]
    assert status.connects == 1
