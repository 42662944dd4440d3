"""KIS and Kiwoom in one slot pool, against the simulator speaking both (issue 18 item 2).

The watchlist is split: every second code prefers Kiwoom. The simulator holds exactly the
driver's registrations per broker; both brokers stream; either broker's outage moves its
codes to the other (one feed gap names the switch), they come home when it is back, and a
client's prices never repeat a trade; the store keeps each trade once, with its source.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream.config import KiwoomSettings, Settings
from tradestream.feeds.kiwoom.adapter import to_kiwoom
from tradestream.roles import Running
from tradestream.sim.market import DEFAULT_TICKERS

CODES = tuple(t.code for t in DEFAULT_TICKERS[:10])
ON_KIWOOM = CODES[1::2]
ON_KIS = CODES[::2]
T = "H0STCNT0"


def pooled(tmp_path: Path, **kiwoom: Any) -> Settings:
    s = make_settings(tmp_path)
    cfg = KiwoomSettings(
        enabled=True,
        preferred=ON_KIWOOM,
        failover_after_s=2.0,
        stale_s=5.0,
        registration_limit=20,
        **kiwoom,
    )
    return replace(s, kiwoom=cfg, kis=replace(s.kis, lost_after_s=2.0))


def kiwoom_upstream(running: Running) -> set[tuple[str, str]]:
    """(type, item) the simulator holds for the Kiwoom session."""
    assert running.sim is not None
    out: set[tuple[str, str]] = set()
    for conn in running.sim.control.conns.values():
        if conn.protocol == "kiwoom":
            out |= set(conn.subs)
    return out


def kis_upstream(running: Running) -> set[tuple[str, str]]:
    assert running.sim is not None
    return {
        key
        for conn in running.sim.control.conns.values()
        if conn.protocol == "kis"
        for key in conn.subs
    }


def in_step(running: Running) -> bool:
    """The simulator holds the driver's registrations, per broker."""
    want_kiwoom = {to_kiwoom(*k) for k in running.slots.registrations("kiwoom-1")}
    return kiwoom_upstream(running) == want_kiwoom and kis_upstream(running) == set(
        running.slots.registrations("kis-1")
    )


def trade_codes(running: Running, session: str) -> set[str]:
    return {c for tr, c in running.slots.registrations(session) if tr == T}


def streaming(running: Running) -> bool:
    return all(f.state == "streaming" for f in running.feeds)


class Prices:
    """A client's price updates: when each code last had one; repeats counted."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.volume: dict[str, int] = {}
        self.repeats = 0
        self.gaps: list[dict[str, Any]] = []

    def since(self, codes: Any, t: float) -> bool:
        return all(self.last.get(c, -1.0) > t for c in codes)


async def read_prices(running: Running, prices: Prices, ready: trio.Event) -> None:
    async with open_websocket_url(f"{running.ws_url}?token={tok(running, 'alice')}") as ws:
        assert (await recv(ws))["type"] == "connected"
        for code in CODES:
            await send(ws, type="subscribe", topic=f"price:{code}")
        ready.set()
        while True:
            m = await recv(ws)
            if m["type"] == "price_update":
                code, volume = m["symbol"], m["data"]["volume"]
                if volume <= prices.volume.get(code, -1):
                    prices.repeats += 1
                prices.volume[code] = volume
                prices.last[code] = trio.current_time()
            elif m["type"] == "feed_gap":
                prices.gaps.append(m)
            elif m["type"] == "ping":
                await send(ws, type="pong")


async def test_two_brokers_share_the_watchlist_and_fail_over_both_ways(tmp_path: Path) -> None:
    s = pooled(tmp_path)
    with trio.fail_after(TIMEOUT_S * 4):
        async with service(s) as running, trio.open_nursery() as nursery:
            assert running.sim is not None
            control = running.sim.control
            await wait_for(lambda: streaming(running) and in_step(running), "both streaming")
            assert trade_codes(running, "kiwoom-1") == set(ON_KIWOOM)
            assert trade_codes(running, "kis-1") == set(ON_KIS)
            prices, ready = Prices(), trio.Event()
            nursery.start_soon(read_prices, running, prices, ready)
            await ready.wait()
            await wait_for(lambda: prices.since(CODES, 0.0), "every code priced")

            # Kiwoom goes away: its codes come back through KIS
            t0 = trio.current_time()
            control.go_down(60.0, broker="kiwoom")
            await wait_for(lambda: prices.since(ON_KIWOOM, t0 + 0.5), "Kiwoom's codes on KIS")
            failover_kiwoom = trio.current_time() - t0
            assert trade_codes(running, "kis-1") == set(CODES)
            await wait_for(lambda: any("failover" in g["reason"] for g in prices.gaps), "gap")
            gap = next(g for g in prices.gaps if "failover" in g["reason"])
            assert gap["source"] == "kiwoom-1"
            assert sorted(gap["codes"]) == sorted(ON_KIWOOM)
            assert "codes moved to kis-1" in gap["reason"]
            await wait_for(lambda: in_step(running), "KIS registered them")

            # Kiwoom is back: its codes go home
            control.go_down(0.0, broker="kiwoom")  # over
            await wait_for(
                lambda: trade_codes(running, "kiwoom-1") == set(ON_KIWOOM) and in_step(running),
                "home again",
                timeout=20,
            )
            t1 = trio.current_time()
            await wait_for(lambda: prices.since(ON_KIWOOM, t1), "streaming from Kiwoom")

            # KIS goes away: its codes come back through Kiwoom
            t2 = trio.current_time()
            control.go_down(60.0, broker="kis")
            await wait_for(lambda: prices.since(ON_KIS, t2 + 0.5), "KIS's codes on Kiwoom")
            failover_kis = trio.current_time() - t2
            assert trade_codes(running, "kiwoom-1") == set(CODES)
            assert any(g["source"] == "kis-1" and "kiwoom-1" in g["reason"] for g in prices.gaps)
            control.go_down(0.0, broker="kis")
            await wait_for(
                lambda: trade_codes(running, "kis-1") == set(ON_KIS) and in_step(running),
                "KIS home again",
                timeout=20,
            )
            assert prices.repeats == 0  # one trade stream per code, through every switch
            print(f"failover: Kiwoom down {failover_kiwoom:.2f}s, KIS down {failover_kis:.2f}s")
            assert running.router.duplicates is not None
            nursery.cancel_scope.cancel()
    # the store: each trade once, from the session that passed it on first
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        by_source = dict(
            conn.execute(
                sa.text("SELECT source, count(*) FROM stock_prices_realtime GROUP BY source")
            ).all()
        )
        doubled = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT venue, stock_code, trade_time, volume "
                "FROM stock_prices_realtime GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d"
            )
        ).scalar()
    engine.dispose()
    assert by_source.get("kis-1", 0) > 0 and by_source.get("kiwoom-1", 0) > 0, by_source
    assert doubled == 0


async def test_a_pooled_run_is_recorded_and_replayed_row_for_row(tmp_path: Path) -> None:
    """Kiwoom's frames are recorded beside KIS's; the replay decodes each with its broker's
    decoder and stores exactly the live rows, Kiwoom's trades and books with their source."""
    from tests.e2e.test_feeds import dump, partial_service
    from tradestream.roles import run_service

    (tmp_path / "live").mkdir()
    live = replace(
        pooled(tmp_path / "live"),
        sim=replace(make_settings(tmp_path).sim, orderbook_rate=20.0),
    )
    live = replace(live, kis=replace(live.kis, extra=(("H0STASP0", ON_KIWOOM[0]),)))
    recording = tmp_path / "rec.jsonl.gz"
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(partial_service(live, record=recording))
            assert running.sim is not None
            await wait_for(lambda: streaming(running) and in_step(running), "both streaming")
            await wait_for(
                lambda: (
                    running.router.by_source["kiwoom-1"] >= 50
                    and running.router.by_type["OrderBook"] >= 3
                ),
                "Kiwoom's trades and books",
            )
            running.sim.control.drop_all(broker="kiwoom")  # a gap, recorded too
            await wait_for(lambda: running.router.by_type["FeedGap"] >= 1, "the gap")
            running.stop()
    (tmp_path / "replay").mkdir()
    replayed = pooled(tmp_path / "replay")
    with trio.fail_after(TIMEOUT_S):
        await run_service(replayed, replay=recording)
    got, want = dump(replayed), dump(live)
    assert got == want
    sources = {row[-2] for row in want["stock_prices_realtime"]}
    assert {"kis-1", "kiwoom-1"} <= sources, sources
    assert any(row[0] == "kiwoom-1" for row in want["feed_gaps"])


async def test_kiwoom_token_is_the_process_credential_and_a_refused_one_is_replaced(
    tmp_path: Path,
) -> None:
    """The Kiwoom session's token comes from the process's credential manager (listed in the
    status without the token); when the broker forgets it, LOGIN is refused for the token
    (8005), the session gets one new token and streams again."""
    s = pooled(tmp_path)
    with trio.fail_after(TIMEOUT_S * 2):
        async with service(s) as running:
            assert running.sim is not None
            await wait_for(lambda: streaming(running) and in_step(running), "both streaming")
            admin = tok(running, "ops", role="admin")

            async def kiwoom_credential() -> dict[str, Any]:
                async with httpx.AsyncClient(base_url=running.url) as http:
                    status = (await http.get("/api/ws/status", params={"token": admin})).json()
                (cred,) = [c for c in status["credentials"] if c["kind"] == "kiwoom-access"]
                return cred

            first = await kiwoom_credential()
            assert (first["state"], first["issued"]) == ("valid", 1)
            token = next(iter(running.sim.control.kiwoom_tokens))
            kiwoom = next(f for f in running.feeds if f.name == "kiwoom-1")
            refusals_before = kiwoom.decoder.get("refusals", {})
            assert refusals_before == {}
            running.sim.control.revoke_credentials()  # the broker forgets every token
            running.sim.control.drop_all(broker="kiwoom")
            await wait_for(
                lambda: kiwoom.decoder.get("refusals", {}).get("login:token") == 1, "refused"
            )
            await wait_for(lambda: streaming(running) and in_step(running), "streaming again")
            again = await kiwoom_credential()
            assert (again["state"], again["issued"]) == ("valid", 2)
            assert token not in running.sim.control.kiwoom_tokens
            status_text = str(again)
            assert token not in status_text and s.kiwoom.app_secret not in status_text
