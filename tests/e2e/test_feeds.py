"""Every message type from the simulator through the real feeds into the store, and the faults
the feeds must survive. Real sockets and threads: real time, generous guards."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import sqlalchemy as sa
import trio

from tests.conftest import make_settings
from tests.e2e.test_service import open_websocket_url, recv, service, token, wait_for
from tradestream.config import Settings
from tradestream.feeds.kis.codec import subscribe_message
from tradestream.feeds.transport import open_upstream
from tradestream.roles import run_service

TIMEOUT_S = 30
TABLES = {
    "Tick": "stock_prices_realtime",
    "OrderBook": "orderbook_snapshots",
    "ProgramTrade": "program_trades",
    "Execution": "executions",
    "News": "news",
    "FeedGap": "feed_gaps",
}


def table_counts(s: Settings) -> dict[str, int]:
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        out = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in TABLES.values()
        }
    engine.dispose()
    return out


def all_types_settings(tmp_path: Path, **sim: object) -> Settings:
    # LS: news, and trades of a code KIS does not stream (the same trade from two brokers is
    # one row: its natural key is the venue's, not the broker's).
    return make_settings(
        tmp_path,
        ls=(("NWS", "NWS001"), ("K3_", "293490")),
        extra=(("H0STASP0", "005930"), ("H0STPGM0", "005930")),
        hts_id="demo",
        sim={"orderbook_rate": 20.0, "program_rate": 20.0, "news_rate": 20.0, **sim},
    )


async def test_every_message_type_is_stored_once(tmp_path: Path) -> None:
    s = all_types_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            await wait_for(lambda: all(f.state == "streaming" for f in running.feeds), "streaming")
            running.sim.control.place_order("005930", "buy", 10)
            running.sim.control.place_order("000660", "sell", 3, 180000)
            needed = {"Tick", "OrderBook", "ProgramTrade", "News"}
            router = running.router
            await wait_for(
                lambda: (
                    needed <= set(router.by_type)
                    and router.by_type["Execution"] >= 4
                    and router.by_source["ls-1"] > router.by_type["News"]
                ),  # LS trades
                "all types",
            )
            kis, ls = running.feeds
            assert (kis.name, ls.name) == ("kis-1", "ls-1")
            assert kis.subscriptions["H0STCNI0:demo"] == "subscribed"
            assert ls.subscriptions["NWS:NWS001"] == "subscribed"
    by_type = running.router.by_type
    counts = table_counts(s)
    for name, table in TABLES.items():
        assert counts[table] == by_type.get(name, 0), (name, counts, by_type)
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT kind, side, stock_code, quantity FROM executions ORDER BY id")
        ).all()
        news = conn.execute(sa.text("SELECT title, media, tickers FROM news LIMIT 1")).one()
    engine.dispose()
    assert [tuple(r) for r in rows[:4]] == [
        ("order", "buy", "005930", 10),
        ("fill", "buy", "005930", 10),
        ("order", "sell", "000660", 3),
        ("fill", "sell", "000660", 3),
    ]
    assert news.title and not news.media.startswith("unknown")
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        ls_ticks = conn.execute(
            sa.text("SELECT count(*) FROM stock_prices_realtime WHERE source = 'ls-1'")
        ).scalar_one()
    engine.dispose()
    assert ls_ticks > 0


async def test_malformed_frames_are_counted_and_the_session_survives(tmp_path: Path) -> None:
    s = make_settings(tmp_path, sim={"malformed_rate": 0.3})
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            feed = running.feeds[0]
            await wait_for(lambda: sum(feed.decoder.get("errors", {}).values()) >= 20, "bad frames")
            assert feed.reconnects == 0
            assert feed.state == "streaming"
            assert set(feed.decoder["errors"]) <= {
                "field_count",
                "bad_value",
                "unknown_tr",
                "bad_frame",
            }
            assert running.router.ticks > 0
    assert table_counts(s)["stock_prices_realtime"] == running.router.ticks


async def test_rejected_credentials_then_recovery(tmp_path: Path) -> None:
    s = make_settings(tmp_path, ls=True, sim={"reject_credentials": True, "news_rate": 20.0})
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            kis, ls = running.feeds
            await wait_for(
                lambda: "HTTP 403" in kis.last_error and "HTTP 403" in ls.last_error, "refusals"
            )
            assert running.router.events == 0
            running.sim.control.reject_credentials = False
            await wait_for(lambda: kis.state == ls.state == "streaming", "recovery")


async def test_revoked_approval_key_is_reissued(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            control, feed = running.sim.control, running.feeds[0]
            await wait_for(lambda: feed.state == "streaming", "streaming")
            assert control.stats.approvals == 1
            control.revoke_credentials()
            control.drop_all()
            await wait_for(
                lambda: control.stats.approvals == 2 and feed.state == "streaming",
                "new approval key",
            )
            assert "OPSP0011" in feed.last_error


async def test_feed_gap_reaches_clients_and_store(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    gaps: list[dict[str, Any]] = []
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            async with open_websocket_url(f"{running.ws_url}?token={token(running)}") as ws:
                await recv(ws)
                await wait_for(lambda: running.feeds[0].state == "streaming", "streaming")
                running.sim.control.drop_all()
                while not gaps:
                    msg = await recv(ws)
                    if msg["type"] == "feed_gap":
                        gaps.append(msg)
    (gap,) = gaps
    assert gap["source"] == "kis-1" and "simulated fault" in gap["reason"]
    assert gap["end"] > gap["start"]
    assert table_counts(s)["feed_gaps"] == 1


async def test_data_flows_within_2s_of_the_broker_coming_back(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            control, feed = running.sim.control, running.feeds[0]
            await wait_for(lambda: feed.state == "streaming", "streaming")
            control.go_down(1.5)
            await wait_for(lambda: feed.reconnects >= 2, "failed attempts while down")
            await trio.sleep_until(control.down_until)
            back, before = trio.current_time(), running.router.ticks
            await wait_for(lambda: running.router.ticks > before, "data again")
            assert trio.current_time() - back < 2.0


async def test_fault_switches_over_http(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            feed = running.feeds[0]
            await wait_for(lambda: feed.state == "streaming", "streaming")
            import httpx

            async with httpx.AsyncClient(base_url=running.sim.rest_url) as http:
                ok = await http.post("/sim/faults", json={"drop": True, "malformed_rate": 0.5})
                bad = await http.post("/sim/faults", json={"stall_s": "soon"})
            assert ok.status_code == 200 and bad.status_code == 400
            assert running.sim.control.malformed_rate == 0.5
            await wait_for(
                lambda: (
                    feed.reconnects >= 1
                    and feed.state == "streaming"
                    and sum(feed.decoder.get("errors", {}).values()) > 0
                ),
                "faults felt",
            )


async def test_one_session_per_app_key(tmp_path: Path) -> None:
    """The simulator refuses a second session for an app key (kis.md §3, OPSP8996)."""
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            await wait_for(lambda: running.feeds[0].state == "streaming", "streaming")
            key = next(iter(running.sim.control.approvals))  # the feed's key, same app key
            async with open_upstream(running.sim.ws_url, 5) as ws:
                await ws.send_message(subscribe_message(key, "H0STCNT0", "005930"))
                reply = msgspec.json.decode(await ws.get_message())
    assert reply["body"]["msg_cd"] == "OPSP8996"


async def test_replay_reproduces_the_live_rows(tmp_path: Path) -> None:
    live = all_types_settings(tmp_path / "live")
    recording = tmp_path / "rec.jsonl.gz"
    (tmp_path / "live").mkdir()
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            running = await nursery.start(partial_service(live, record=recording))
            assert running.sim is not None
            await wait_for(lambda: all(f.state == "streaming" for f in running.feeds), "up")
            running.sim.control.place_order("005930", "buy", 7)
            await wait_for(
                lambda: (
                    running.router.by_type["Execution"] >= 2 and running.router.by_type["News"] >= 3
                ),
                "some of everything",
            )
            running.sim.control.drop_all()  # every session reconnects: a gap each
            await wait_for(
                lambda: running.router.by_type["FeedGap"] >= len(running.feeds), "the gaps"
            )
            running.stop()
    (tmp_path / "replay").mkdir()
    replayed = make_settings(tmp_path / "replay")
    with trio.fail_after(TIMEOUT_S):
        await run_service(replayed, replay=recording)  # returns when the recording ends
    got, want = dump(replayed), dump(live)
    diff = {
        t: (sorted(set(got[t]) - set(want[t]))[:2], sorted(set(want[t]) - set(got[t]))[:2])
        for t in want
        if got[t] != want[t]
    }
    assert got == want, diff
    assert table_counts(live)["executions"] >= 2
    assert len(want["feed_gaps"]) >= 2  # replayed too, with their times and reasons
    media = {row for table, rows in want.items() if table == "news" for row in rows}
    assert media and not any("unknown:" in str(row) for row in media)  # the run's names


def partial_service(s: Settings, **kw: Any) -> Any:
    async def start(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_service(s, task_status=task_status, **kw)

    return start


def dump(s: Settings) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(s.store.url)
    out = {}
    with engine.connect() as conn:
        for table in TABLES.values():
            cols = [c["name"] for c in sa.inspect(conn).get_columns(table) if c["name"] != "id"]
            out[table] = sorted(
                tuple(r) for r in conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {table}"))
            )
    engine.dispose()
    return out


async def test_two_kis_sessions_side_by_side(tmp_path: Path) -> None:
    """Two app keys, two approval keys, two sessions on one broker: both stream their own
    registrations (the simulator holds each app key to one session, as KIS does)."""
    from dataclasses import replace as dc_replace
    from functools import partial

    from tradestream.events import Event as Ev
    from tradestream.feeds.kis.adapter import KisAdapter, kis_timing
    from tradestream.feeds.session import FeedStatus, run_feed
    from tradestream.sim.server import run_simulator

    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(run_simulator, s.sim)
            out, events_in = trio.open_memory_channel[Ev](10_000)
            statuses = []
            for i, codes in enumerate((("005930", "000660"), ("035420", "005380"))):
                cfg = dc_replace(
                    s.kis,
                    ws_url=sim.ws_url,
                    rest_url=sim.rest_url,
                    app_key=f"app-{i}",
                    watchlist=codes,
                )
                status = FeedStatus(f"kis-{i + 1}")
                statuses.append(status)
                await nursery.start(
                    partial(
                        run_feed,
                        KisAdapter(cfg, status.name),
                        out.clone(),
                        status,
                        kis_timing(cfg),
                        rest_url=sim.rest_url,
                    )
                )
            seen: dict[str, set[str]] = {"kis-1": set(), "kis-2": set()}
            async for ev in events_in:
                seen[ev.source].add(getattr(ev, "code", ""))
                if all(len(v) == 2 for v in seen.values()):
                    break
            nursery.cancel_scope.cancel()
    assert seen == {"kis-1": {"005930", "000660"}, "kis-2": {"035420", "005380"}}
    assert sim.control.stats.approvals == 2
    assert [st.reconnects for st in statuses] == [0, 0]


async def test_simulator_answers_unknown_rest_paths_with_json_404(tmp_path: Path) -> None:
    import httpx

    from tradestream.sim.server import run_simulator

    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(run_simulator, s.sim)
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                answers = [
                    await http.get("/nope"),
                    await http.post("/uapi/domestic-stock/v1/nope", json={}),
                    await http.get("/"),  # the KIS WebSocket path, asked for over plain HTTP
                    await http.get("/websocket"),  # the LS one
                ]
                token = await http.post(
                    "/oauth2/Approval",
                    json={"grant_type": "client_credentials", "appkey": "a", "secretkey": "b"},
                )
            # the WebSocket paths still serve WebSockets
            async with open_upstream(sim.ws_url, connect_timeout_s=5) as ws:
                await ws.send_message("not json")
                assert msgspec.json.decode(await ws.get_message())["body"]["msg_cd"] == "OPSP9999"
            nursery.cancel_scope.cancel()
    for r in answers:
        assert r.status_code == 404, r
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "not_found"
    assert token.status_code == 200 and token.json()["approval_key"]


async def test_a_drained_feed_takes_everything_the_broker_sent_then_closes(
    tmp_path: Path,
) -> None:
    """A stop during a fast stream: the feed unregisters, reads on until its socket has been
    quiet, and returns; every record the simulator sent on it arrived as an event."""
    from dataclasses import replace as dc_replace

    from tradestream.events import Event as Ev
    from tradestream.feeds.kis.adapter import KisAdapter, kis_timing
    from tradestream.feeds.session import FeedControl, FeedStatus, run_feed
    from tradestream.sim.server import run_simulator

    s = make_settings(tmp_path, sim={"tick_rate": 5000.0})
    received = 0
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            sim = await nursery.start(run_simulator, s.sim)
            cfg = dc_replace(s.kis, ws_url=sim.ws_url, rest_url=sim.rest_url)
            out, events_in = trio.open_memory_channel[Ev](100_000)
            status, control = FeedStatus("kis-1"), FeedControl()
            feed_done = trio.Event()

            async def feed() -> None:
                await run_feed(
                    KisAdapter(cfg, status.name),
                    out,
                    status,
                    kis_timing(cfg),
                    rest_url=sim.rest_url,
                    control=control,
                )
                feed_done.set()

            nursery.start_soon(feed)
            async for _ in events_in:
                received += 1
                if received == 2000:  # streaming fast: stop now
                    control.drain(0.5)
                    break
            async for _ in events_in:  # ends when the feed returns and closes its end
                received += 1
            await feed_done.wait()
            stats = sim.control.stats
            nursery.cancel_scope.cancel()
    assert status.state == "stopped"
    assert stats.malformed_sent == 0
    assert received == stats.records_sent + stats.notices_sent > 2000
