"""Detection and signals through the whole tree: a sudden move in the simulator reaches a
subscribed client as an alert and the store; index updates and the market gate; scans and
posted signals broadcast on signal:{kind} and stored."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import httpx
import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream.config import Settings
from tradestream.events import Tick
from tradestream.pipeline.routing import STRATEGY_DRAIN_S
from tradestream.roles import run_service


def audits(running: object) -> int:
    """Slot audits the service made (they share the side edge with signals)."""
    return len(running.slots.manager.audit_log)  # type: ignore[attr-defined]


SKIP = ("price_update", "ping", "orderbook_update", "index_update", "news", "order_update")


def detect_settings(tmp_path: Path) -> Settings:
    s = make_settings(tmp_path, extra=(("H0UPCNT0", "0001"), ("H0UPCNT0", "1001")))
    return s


async def test_sudden_move_alert_reaches_subscribers_and_the_store(tmp_path: Path) -> None:
    s = detect_settings(tmp_path)
    codes = s.kis.watchlist[:5]
    code = codes[0]
    latencies: list[float] = []
    with trio.fail_after(TIMEOUT_S + 10):
        async with service(s) as running:
            assert running.sim is not None
            url = f"{running.ws_url}?token={tok(running)}"
            async with (
                open_websocket_url(url) as all_alerts,
                open_websocket_url(url) as mine,
                open_websocket_url(url) as other,
            ):
                for ws, topic in (
                    (all_alerts, "alert"),
                    (mine, f"alert:{code}"),
                    (other, "alert:000000"),
                ):
                    await recv(ws)
                    await send(ws, type="subscribe", topic=topic)
                    await recv_type(ws, "subscribed")
                await wait_for(
                    lambda: all(c in running.state.latest for c in codes),
                    "a first trade of each code",
                )
                for c in codes:  # +6% on five codes: five alerts
                    jumped_ns = time.time_ns()
                    running.sim.control.jump(c, 0.06)
                    a = await recv_type(all_alerts, "alert", skip=SKIP)
                    read_ns = time.time_ns()
                    assert (a["symbol"], a["data"]["direction"]) == (c, "up")
                    assert a["data"]["change_percent"] >= 5.0
                    # the alert carries its own triggering trade's receive time (one clock)
                    trade_ns = a["data"]["received_ns"]
                    assert isinstance(trade_ns, int) and jumped_ns <= trade_ns <= read_ns
                    latencies.append((read_ns - trade_ns) / 1e9)
                b = await recv_type(mine, "alert", skip=SKIP)  # alert:{code} got its own only
                assert b["symbol"] == code
                running.sim.control.jump(code, 0.06)  # the same way again: debounced
                running.sim.control.jump(code, -0.07)  # the other way: an alert
                a = await recv_type(all_alerts, "alert", skip=SKIP)
                assert (a["symbol"], a["data"]["direction"]) == (code, "down")
                assert a == await recv_type(mine, "alert", skip=SKIP)
                # the unrelated code's subscriber got nothing but a pong
                await send(other, type="ping", timestamp="t")
                assert (await recv_type(other, "pong", skip=SKIP))["timestamp"] == "t"
                assert running.router.by_type["Alert"] == 6
        engine = sa.create_engine(s.store.url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT stock_code, direction FROM alerts")).all()
        engine.dispose()
    assert sorted(rows) == sorted([(c, "up") for c in codes] + [(code, "down")])
    # tick receive to alert read by the client (one clock)
    assert statistics.median(latencies) < 0.2, latencies


async def test_index_updates_and_market_gate(tmp_path: Path) -> None:
    s = detect_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                for topic in ("market:kospi", "market:kosdaq", "market-gate"):
                    await send(ws, type="subscribe", topic=topic)
                seen: dict[str, dict[str, object]] = {}
                while len(seen) < 3:
                    m = await recv(ws)
                    if m["type"] == "index_update":
                        seen[str(m["index"])] = m["data"]
                    elif m["type"] == "market_gate_update":
                        seen["gate"] = m["data"]
                assert float(seen["kospi"]["value"]) > 1000  # type: ignore[arg-type]
                assert float(seen["kosdaq"]["value"]) > 100  # type: ignore[arg-type]
                assert seen["gate"]["status"] in ("open", "caution", "closed")
                assert seen["gate"]["level"] in ("green", "yellow", "red")
            # a late subscriber gets the current state at once (snapshot)
            async with open_websocket_url(url) as late:
                await recv(late)
                await send(late, type="subscribe", topic="market-gate")
                await recv_type(late, "subscribed")
                assert (await recv(late))["type"] == "market_gate_update"
        engine = sa.create_engine(s.store.url)
        with engine.connect() as conn:
            names = {r[0] for r in conn.execute(sa.text("SELECT index_name FROM index_ticks"))}
        engine.dispose()
    assert names == {"kospi", "kosdaq"}


async def test_signals_scan_and_post(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            await wait_for(lambda: running.flusher.rows > 200, "stored trades")
            producer = {"Authorization": f"Bearer {tok(running, 'bot', role='producer')}"}
            user = {"Authorization": f"Bearer {tok(running)}"}
            url = f"{running.ws_url}?token={tok(running)}"
            async with (
                open_websocket_url(url) as ws,
                httpx.AsyncClient(base_url=running.url, timeout=10) as http,
            ):
                await recv(ws)
                for topic in ("signal:vcp", "signal:daytrading"):
                    await send(ws, type="subscribe", topic=topic)
                    await recv_type(ws, "subscribed")
                denied = await http.post("/api/signals/vcp/scan", headers=user)
                assert denied.status_code == 403
                scanned = await http.post("/api/signals/vcp/scan", headers=producer)
                assert scanned.status_code == 200, scanned.text
                body = scanned.json()
                assert body["signal_type"] == "VCP" and body["delivered_to"] == 1
                msg = await recv_type(ws, "signal_update", skip=SKIP)
                assert msg["data"]["signal_type"] == "VCP"
                assert msg["data"]["count"] == body["count"] == len(msg["data"]["signals"])
                posted = await http.post(
                    "/api/signals/daytrading",
                    headers=producer,
                    json={
                        "signals": [
                            {"symbol": "005930", "score": 1.5, "reason": "gap up"},
                            {"symbol": "000660", "score": 1.1, "reason": "volume"},
                        ]
                    },
                )
                assert posted.status_code == 200
                msg = await recv_type(ws, "signal_update", skip=SKIP)
                assert msg["data"]["signal_type"] == "DAYTRADING"
                assert [x["symbol"] for x in msg["data"]["signals"]] == ["005930", "000660"]
                bad = await http.post(
                    "/api/signals/daytrading", headers=producer, json={"signals": "nope"}
                )
                assert bad.status_code == 400
                unknown = await http.post("/api/signals/momentum", headers=producer, json={})
                assert unknown.status_code == 404
            await wait_for(
                lambda: running.side["forwarded"] - audits(running) >= 2, "signals stored"
            )
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT kind, stock_code FROM signals WHERE source = 'rest'")
        ).all()
    engine.dispose()
    assert sorted(rows) == [("daytrading", "000660"), ("daytrading", "005930")]


async def test_alert_threshold_is_configurable(tmp_path: Path) -> None:
    s = detect_settings(tmp_path)
    s = replace(s, detect=replace(s.detect, threshold=0.10))
    code = s.kis.watchlist[1]
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            await wait_for(lambda: code in running.state.latest, "a first trade")
            base = running.state.latest[code].price
            running.sim.control.jump(code, 0.06)  # below 10%: no alert
            # the router applies a trade and runs the detector on it in one step: once the
            # jumped price is the latest, the detector has judged it
            await wait_for(
                lambda: running.state.latest[code].price >= base * 1.04, "a trade after the jump"
            )
            assert running.router.by_type["Alert"] == 0
            running.sim.control.jump(code, 0.12)
            await wait_for(lambda: running.router.by_type["Alert"] == 1, "an alert at 10%")


async def test_news_strategy_signals_reach_subscribers_and_the_store(tmp_path: Path) -> None:
    s = make_settings(tmp_path, ls=True, sim={"news_rate": 30.0})
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="strategy:news-keywords")
                await recv_type(ws, "subscribed")
                msg = await recv_type(ws, "strategy_signal", skip=SKIP)
            assert msg["strategy_id"] == "news-keywords"
            data = msg["data"]
            assert data["signal"] in ("watch_long", "watch_short")
            assert data["reason"].split(" in ")[0] in data["headline"]
            status = running.router  # the strategy saw the news the router routed
            assert status.by_type["News"] >= 1
            await wait_for(
                lambda: running.side["forwarded"] - audits(running) >= 1, "signal stored"
            )


class EveryTick:
    """Slower than the feed on purpose: a queue builds up."""

    id = "every-tick"
    wants = (Tick,)

    async def handle(self, ev: Tick) -> list[dict[str, object]]:
        await trio.sleep(0.02)
        return [{"signal": "watch", "symbol": ev.code}]


class Broken:
    id = "broken"
    wants = (Tick,)

    def __init__(self) -> None:
        self.calls = 0

    async def handle(self, ev: Tick) -> list[dict[str, object]]:
        self.calls += 1
        raise RuntimeError("a bug")


class Hangs:
    """Stuck on its first tick for good (a lost lock, a dead HTTP call), never returning."""

    id = "hangs"
    wants = (Tick,)

    async def handle(self, ev: Tick) -> list[dict[str, object]]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_hung_strategy_does_not_stop_the_feed_or_the_store(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(partial(run_service, s, strategies=[Hangs()]))
            admin = {"Authorization": f"Bearer {tok(running, 'ops', role='admin')}"}
            async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:

                async def hung() -> dict[str, object]:
                    r = await http.get("/api/ws/status", headers=admin)
                    return r.json()["strategies"]["hangs"]  # type: ignore[no-any-return]

                await wait_for(lambda: running.flusher.rows > 100, "stored trades")
                # Stuck on its first tick, its queue only grows; meanwhile the feed streams
                # and the store keeps up. (Its 5 s timeout and restart: test_strategies.py.)
                before = await hung()
                ticks0, rows0 = running.router.ticks, running.flusher.rows
                await wait_for(lambda: running.router.ticks > ticks0 + 100, "more trades")
                await wait_for(lambda: running.flusher.rows > rows0 + 100, "more stored")
                after = await hung()
                assert before["handled"] == after["handled"] == after["errors"] == 0
                assert after["queue_depth"] > before["queue_depth"] + 50  # type: ignore[operator]
                assert all(f.state == "streaming" for f in running.feeds)
            t0 = trio.current_time()
            running.stop()
    # the stop waits STRATEGY_DRAIN_S for it at most, and every received event is stored
    assert trio.current_time() - t0 < STRATEGY_DRAIN_S + 2.0
    assert running.flusher.rows == running.router.events + running.side["forwarded"]


async def test_signals_made_while_draining_are_stored(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(partial(run_service, s, strategies=[EveryTick()]))
            await wait_for(lambda: running.router.ticks > 100, "a backlog")
            running.stop()
    status = running.side
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT count(*) FROM signals WHERE strategy = 'every-tick'")
        ).scalar_one()
    engine.dispose()
    assert stored > 0 and status["dropped"] == 0
    # every signal the strategy made, during the run and the drain, is in the table
    assert stored == status["forwarded"] - len(running.slots.manager.audit_log)


async def test_a_failing_strategy_does_not_hold_the_shutdown(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            broken = Broken()
            running = await nursery.start(partial(run_service, s, strategies=[broken]))
            # failed twice: restarted once, now in a longer restart backoff, ticks queueing
            await wait_for(lambda: broken.calls >= 2 and running.router.ticks > 50, "ticks")
            t0 = trio.current_time()
            running.stop()
    assert trio.current_time() - t0 < STRATEGY_DRAIN_S + 2.0
    assert running.flusher.rows == running.router.events + running.side["forwarded"]
