"""Redis in the tree (seed 001 and 004): alerts go out on a channel for external consumers;
signals published by an external worker reach the WebSocket clients of signal:{kind}."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import msgspec
import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_roles_redis import drop_keys
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tests.service.test_redis_bridge import listening, publish

SKIP = ("price_update", "ping", "orderbook_update", "index_update", "news", "order_update")


async def test_alerts_out_and_signals_in(tmp_path: Path, redis_url: str, prefix: str) -> None:
    s = make_settings(tmp_path)
    s = replace(
        s,
        detect=replace(
            s.detect,
            redis_url=redis_url,
            redis_alert_channel=f"{prefix}alerts",
            redis_signal_channel=f"{prefix}signals",
        ),
        redis_stream=f"{prefix}stream",  # the credentials' keys are named after it
    )
    code = s.kis.watchlist[0]
    try:
        with trio.fail_after(TIMEOUT_S):
            async with listening(redis_url, f"{prefix}alerts") as got, service(s) as running:
                assert running.sim is not None
                await wait_for(lambda: code in running.state.latest, "a first trade")
                running.sim.control.jump(code, 0.07)
                await wait_for(lambda: len(got) == 1, "the alert on Redis")
                alert = msgspec.json.decode(got[0][1])
                assert (alert["symbol"], alert["direction"], alert["kind"]) == (
                    code,
                    "up",
                    "sudden_move",
                )
                url = f"{running.ws_url}?token={tok(running)}"
                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    await send(ws, type="subscribe", topic="signal:vcp")
                    await recv_type(ws, "subscribed")
                    await wait_for(lambda: running.hub.has_subscribers("signal:vcp"), "subscribed")
                    await wait_for(lambda: "000660" in running.state.names, "the stock master")
                    await publish(redis_url, f"{prefix}signals", b"not json")  # dropped, logged
                    await publish(
                        redis_url,
                        f"{prefix}signals",
                        msgspec.json.encode(
                            {"signal_type": "VCP", "signals": [{"symbol": "000660", "score": 0.9}]}
                        ),
                    )
                    msg = await recv_type(ws, "signal_update", skip=SKIP)
    finally:
        await drop_keys(redis_url, s.redis_stream)  # the credentials' too
    assert msg["data"]["signal_type"] == "VCP"
    # the stock master names the symbol (the simulator's master files, loaded at start)
    assert msg["data"]["signals"] == [{"symbol": "000660", "score": 0.9, "name": "SK hynix"}]
    # and stored, once the stop has drained: one row per item, the bad message none
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT source, kind, strategy, stock_code, payload FROM signals "
                "WHERE source = 'redis'"
            )
        ).all()
    engine.dispose()
    assert [tuple(r[:4]) for r in rows] == [("redis", "vcp", "vcp", "000660")]
    payload = rows[0][4]
    assert (payload if isinstance(payload, dict) else json.loads(payload)) == {
        "symbol": "000660",
        "score": 0.9,
        "name": "SK hynix",
    }
