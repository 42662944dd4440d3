"""Recovery over a real socket: a client that comes back with `since` gets exactly what it
missed on a lossless topic, in order, then live messages; a stale epoch or a trimmed history
says `recovered: false` and replays nothing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service


async def test_a_client_recovers_what_it_missed(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    s = replace(s, gateway=replace(s.gateway, history_size=3))
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            producer = {"Authorization": f"Bearer {tok(running, 'bot', role='producer')}"}
            url = f"{running.ws_url}?token={tok(running)}"
            async with httpx.AsyncClient(base_url=running.url, headers=producer) as http:

                async def post(n: int) -> None:
                    r = await http.post(
                        "/api/signals/vcp", json={"signals": [{"symbol": "005930", "n": n}]}
                    )
                    assert r.status_code == 200, r.text

                async def subscribe(ws: Any, **since: Any) -> dict[str, Any]:
                    await send(ws, type="subscribe", topic="signal:vcp", **since)
                    return await recv_type(ws, "subscribed")

                async def n_of(ws: Any) -> tuple[int, int]:
                    m = await recv_type(ws, "signal_update")
                    return m["data"]["signals"][0]["n"], m["offset"]

                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    first = await subscribe(ws)
                    epoch = first["epoch"]
                    await post(1)
                    await post(2)
                    seen = [await n_of(ws), await n_of(ws)]
                assert [n for n, _ in seen] == [1, 2]
                last = seen[-1][1]
                await post(3)  # nobody watches: kept in the history all the same
                await post(4)
                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    back = await subscribe(ws, since={"offset": last, "epoch": epoch})
                    replayed = [await n_of(ws), await n_of(ws)]
                    await post(5)
                    live = await n_of(ws)
                assert back["recovered"] is True and back["epoch"] == epoch
                assert [n for n, _ in replayed] == [3, 4] and live[0] == 5
                offsets = [o for _, o in [*seen, *replayed, live]]
                assert offsets == sorted(offsets) and len(set(offsets)) == 5
                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    stale = await subscribe(ws, since={"offset": last, "epoch": "another"})
                    await post(6)
                    after = await n_of(ws)  # nothing replayed came before the live one
                assert stale["recovered"] is False
                assert after[0] == 6
                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    trimmed = await subscribe(ws, since={"offset": seen[0][1], "epoch": epoch})
                assert trimmed["recovered"] is False  # 2..6 kept 3: 2 is gone
            async with httpx.AsyncClient(base_url=running.url) as plain:
                metrics = (await plain.get("/metrics")).text
    assert 'tradestream_ws_recoveries_total{recovered="yes"} 1.0' in metrics
    assert 'tradestream_ws_recoveries_total{recovered="no"} 2.0' in metrics
