"""Names: the simulator's stock master files loaded at start (as the broker's are), a search
over REST (code or name prefix, Korean included), names in get_price, slots and signals, and
the CLI's `stocks load` / `stocks search`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream.hub import Hub
from tradestream.pipeline.publish import SignalPublisher
from tradestream.sim.server import run_simulator


async def test_master_search_and_names(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            await wait_for(lambda: len(running.state.names) >= 250, "the stock master loaded")
            assert running.state.names["005930"] == "Samsung Electronics"
            auth = {"Authorization": f"Bearer {tok(running)}"}
            async with httpx.AsyncClient(base_url=running.url, headers=auth) as http:
                korean = await http.get("/api/stocks", params={"q": "모의종목00", "limit": 5})
                by_code = (await http.get("/api/stocks", params={"q": "0059"})).json()["data"]
                missing = await http.get("/api/stocks")
                too_many = await http.get("/api/stocks", params={"q": "a", "limit": 101})
            async with httpx.AsyncClient(base_url=running.url) as nobody:
                anonymous = await nobody.get("/api/stocks", params={"q": "a"})
            rows = korean.json()["data"]
            assert korean.status_code == 200 and len(rows) == 5
            assert all(r["name"].startswith("모의종목00") for r in rows)
            assert {r["market"] for r in rows} <= {"KOSPI", "KOSDAQ"}
            assert by_code[0] == {
                "code": "005930",
                "name": "Samsung Electronics",
                "market": "KOSPI",
            }
            assert missing.status_code == too_many.status_code == 400
            assert anonymous.status_code == 401
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await wait_for(lambda: running.state.tick("005930") is not None, "a trade")
                await send(ws, type="get_price", symbol="005930")
                price = await recv_type(ws, "price")
            assert price["name"] == "Samsung Electronics" and price["source"] == "memory"


def test_signals_carry_names() -> None:
    stored: list[object] = []
    pub = SignalPublisher(Hub(), stored.append, {"005930": "Samsung Electronics"}.get)  # type: ignore[arg-type]
    pub.publish("vcp", [{"symbol": "005930"}, {"symbol": "000660", "name": "given"}], "test")
    assert [sig.payload.get("name") for sig in stored] == ["Samsung Electronics", "given"]  # type: ignore[attr-defined]


async def test_cli_loads_and_searches_the_master(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    env = {
        **os.environ,
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 'names.db'}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
    }
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(run_simulator, s.sim)
            cmd = [sys.executable, "-m", "tradestream", "stocks"]
            load = await trio.run_process(
                [*cmd, "load", "--url", f"{sim.rest_url}/common/master"],
                env=env, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            found = await trio.run_process(
                [*cmd, "search", "모의종목010"], env=env, capture_stdout=True, check=False
            )
            bad = await trio.run_process(
                [*cmd, "load", "--url", f"{sim.rest_url}/nothing-here"],
                env=env, capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
            nursery.cancel_scope.cancel()
    assert load.returncode == 0, load.stderr.decode()
    assert load.stdout.decode().startswith("250 stocks loaded from ")
    lines = found.stdout.decode().splitlines()
    assert len(lines) == 1 and lines[0].endswith("모의종목010")
    assert bad.returncode == 1
    err = bad.stderr.decode()
    assert err.startswith("error: the stock master could not be loaded") and "Traceback" not in err


async def test_scans_run_on_a_schedule(tmp_path: Path) -> None:
    """TRADESTREAM_SCAN_EVERY_S: both scans run by themselves while the (simulated) market is
    open; their lists reach `signal:*` subscribers without any POST."""
    from dataclasses import replace

    s = make_settings(tmp_path)
    s = replace(s, detect=replace(s.detect, scan_every_s=0.3))
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="signal:daytrading")
                await recv_type(ws, "subscribed")
                update = await recv_type(ws, "signal_update")
    data = update["data"]  # nothing was posted: this list is the schedule's
    assert data["signal_type"] == "DAYTRADING" and data["count"] == len(data["signals"])
