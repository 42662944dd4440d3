"""The slot manager against the simulator, which enforces the registration limit and forgets a
connection's registrations when it closes. After every step, what the simulator has registered
per session (the execution notice included) equals the driver's state.

- the defaults out of the box: 41 per session, 50 codes and the extras over two sessions;
- two sessions and 60 candidate codes: picks, client demand, a holding from a fill, a session
  lost for good and back;
- a plain reconnect (the drop fault), and demand claimed while a session reconnects;
- the execution notice moving to the surviving session and back, fills followed meanwhile,
  a sell to zero releasing the holding;
- holdings from the account's positions at start and drift corrected;
- movers promoted to scanner slots; picks and scanner finds over REST.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import trio
from trio_websocket import WebSocketConnection

from tests.conftest import make_settings
from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream.config import Settings, from_env
from tradestream.roles import Running
from tradestream.sim.market import DEFAULT_TICKERS

CODES = tuple(t.code for t in DEFAULT_TICKERS) + tuple(f"9000{i:02d}" for i in range(10))
KEY_1, KEY_2 = "sim-appkey", "second-appkey"
SESSIONS = {KEY_1: "kis-1", KEY_2: "kis-2"}
LIMIT = 12  # per session in the simulator: 11 usable on the notice's session, 12 on the other
MARGIN = 0  # ... with no spare kept
NOTICE = ("H0STCNI0", "demo")
ACCOUNT = "5012345601"


def two_sessions(tmp_path: Path, **kis: Any) -> Settings:
    s = make_settings(
        tmp_path,
        sim={"tickers": CODES, "registration_limit": LIMIT},
        hts_id="demo",
        app_keys=((KEY_2, "secret-2"),),
        slot_margin=MARGIN,
        registration_limit=LIMIT,
        scanner_slots=0,
        **kis,
    )
    return replace(s, gateway=replace(s.gateway, max_subscriptions=50))


def upstream(running: Running, keys: dict[str, str] = SESSIONS) -> dict[str, set[tuple[str, str]]]:
    """What the simulator holds per session (by app key), notices included."""
    assert running.sim is not None
    out: dict[str, set[tuple[str, str]]] = {name: set() for name in keys.values()}
    for conn in running.sim.control.conns.values():
        if conn.protocol == "kis" and conn.app_key in keys:
            out[keys[conn.app_key]] |= conn.subs
    return out


def desired(running: Running, names: Any = None) -> dict[str, set[tuple[str, str]]]:
    return {n: set(running.slots.registrations(n)) for n in names or SESSIONS.values()}


async def in_sync(
    running: Running, what: str, keys: dict[str, str] = SESSIONS, only: str | None = None
) -> None:
    """Wait until the simulator holds the driver's state (of session `only`, if given)."""

    def same() -> bool:
        up, want = upstream(running, keys), desired(running, keys.values())
        return up == want if only is None else up[only] == want[only]

    try:
        await wait_for(same, what)
    except trio.TooSlowError:
        up, want = upstream(running, keys), desired(running, keys.values())
        raise AssertionError(
            f"{what}: upstream - desired {[(n, up[n] - want[n]) for n in up]}; "
            f"desired - upstream {[(n, want[n] - up[n]) for n in up]}; "
            f"feeds {[f.subscriptions for f in running.feeds]}"
        ) from None


def streaming(running: Running) -> bool:
    return all(f.state == "streaming" for f in running.feeds)


async def get_json(running: Running, path: str, role: str = "admin") -> Any:
    """GET as an admin (who sees holdings and the audits) or another role."""
    async with httpx.AsyncClient(base_url=running.url) as http:
        resp = await http.get(path, params={"token": tok(running, "ops", role=role)})
    assert resp.status_code == 200, resp.text
    return resp.json()


async def prices_of(ws: WebSocketConnection, codes: set[str], n: int = 1) -> set[str]:
    """Read until `n` of `codes` have sent a price update; other messages are skipped."""
    got: set[str] = set()
    while len(got) < n:
        m = await recv(ws)
        if m["type"] == "price_update" and m["symbol"] in codes:
            got.add(m["symbol"])
    return got


async def subscribe_all(ws: WebSocketConnection, codes: list[str]) -> dict[str, dict[str, Any]]:
    for code in codes:
        await send(ws, type="subscribe", topic=f"price:{code}")
    replies: dict[str, dict[str, Any]] = {}
    while len(replies) < len(codes):
        m = await recv(ws)
        if m["type"] in ("subscribed", "error"):
            replies[m["topic"].removeprefix("price:")] = m
    return replies


# -- out of the box ---------------------------------------------------------------------------


async def test_out_of_the_box(tmp_path: Path) -> None:
    """`from_env` with nothing but ports and files set: the simulator's defaults (41 per KIS
    session, all 50 codes, two order books, program trading, two indexes and the demo account's
    notices over two KIS sessions, every second code's trades and books on the Kiwoom session)
    fit with nothing pending, every slot gets data, and status, /api/slots and /metrics report
    the same numbers."""
    s = from_env(
        {
            "TRADESTREAM_PORT": "0",
            "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
            "TRADESTREAM_DB_AUTO_UPGRADE": "1",
            "TRADESTREAM_SPOOL_DIR": str(tmp_path),
            "TRADESTREAM_JWT_SECRET": "out-of-the-box-secret-out-of-the-box",
        }
    )
    assert (s.kis.registration_limit, s.sim.registration_limit, s.kis.slot_margin) == (41, 41, 1)
    assert len(s.kis.watchlist) == 50 and len(s.kis.extra) == 5
    assert len(s.kis.session_keys()) == 2 and s.kis.hts_id == "demo"
    keys = {key: f"kis-{i + 1}" for i, (key, _) in enumerate(s.kis.session_keys())}
    started = time.time()
    with trio.fail_after(TIMEOUT_S + 40):
        async with service(s) as running:
            await wait_for(lambda: streaming(running), "streaming", timeout=15)
            await in_sync(running, "registered", keys)
            manager = running.slots.manager

            def finds() -> list[str]:  # the broker's rankings' market-wide finds
                return [r.code for r in manager.slots() if r.priority.name == "SCANNER"]

            await wait_for(lambda: len(finds()) == s.kis.scanner_slots, "market-wide finds")
            assert not set(finds()) & set(s.kis.watchlist)
            assert manager.pending() == []
            usage = {n: (u.used, u.capacity) for n, u in manager.usage().items()}
            assert usage["kis-1"][1] == 41 - 1 - 1 and usage["kis-2"][1] == 41 - 1  # notice
            assert usage["kiwoom-1"][1] == 100
            assert sum(used for used, _ in usage.values()) == 55 + s.kis.scanner_slots
            on_kiwoom = running.slots.registrations("kiwoom-1")
            assert {c for tr, c in on_kiwoom if tr == "H0STCNT0"} == set(s.kiwoom.preferred)
            assert {tr for tr, _ in on_kiwoom} <= {"H0STCNT0", "H0STASP0"}  # trades and books
            assert running.slots.notice_session == "kis-1"
            assert ("H0STCNI0", "demo") in upstream(running, keys)["kis-1"]
            # every kind of slot gets data: trades, order books, program trading, indexes
            picks = set(s.kis.pick_keys())

            async def all_fed() -> list[dict[str, Any]]:
                while True:
                    rows: list[dict[str, Any]] = (await get_json(running, "/api/slots"))["slots"]
                    if all(r["last_data_at"] is not None for r in rows):
                        return rows
                    await trio.sleep(0.5)

            with trio.fail_after(30):
                rows = await all_fed()
            now = time.time()
            assert {(r["tr_id"], r["code"]) for r in rows if r["priority"] != "scanner"} == picks
            for r in rows:
                rec = manager.slot(r["tr_id"], r["code"])
                assert rec is not None
                assert r["session"] == rec.session in ("kis-1", "kis-2", "kiwoom-1")
                assert r["priority"] in ("pick", "holding", "scanner")
                assert r["name"]  # the simulator's stock master names every listed code
                assert "pick" in r["claims"] or r["claims"] == ["scanner"]
                assert started <= r["subscribed_at"] <= r["last_data_at"] <= now
                assert r["stale"] is False
            status = await get_json(running, "/api/ws/status")
            async with httpx.AsyncClient(base_url=running.url) as http:
                metrics = (await http.get("/metrics")).text
    slots = status["slots"]
    assert slots["lost_sessions"] == [] and slots["pending"] == 0
    assert slots["notice_session"] == "kis-1" and slots["sessions_lost"] == 0
    assert {n: (u["used"], u["capacity"]) for n, u in slots["usage"].items()} == usage
    assert slots["reconciled"] == 0 and slots["stale_reregistered"] == 0
    recent = slots["recent"]
    assert len(recent) == 20
    assert {a["action"] for a in recent} <= {"grant", "upgrade", "downgrade", "defer", "release"}
    for a in recent:
        assert set(a) == {"at", "action", "session", "tr_id", "code", "priority", "reason"}
        assert a["session"] in ("kis-1", "kis-2", "kiwoom-1") and started <= a["at"] <= now
    grants = [a for a in recent if a["action"] == "grant"]
    assert all((g["tr_id"], g["code"]) in picks or g["priority"] == "scanner" for g in grants)

    def gauge(name: str, session: str | None = None) -> float:
        label = f'{{session="{session}"}}' if session else ""
        m = re.search(rf"^{name}{re.escape(label)} (\S+)$", metrics, re.M)
        assert m is not None, f"{name}{label} not in /metrics"
        return float(m.group(1))

    for name, (used, capacity) in usage.items():
        assert gauge("tradestream_slots_used", name) == used
        assert gauge("tradestream_slots_capacity", name) == capacity
    assert gauge("tradestream_slots_pending") == 0


# -- two sessions at the simulator's limit ----------------------------------------------------


async def test_two_sessions_sixty_codes(tmp_path: Path) -> None:
    s = two_sessions(tmp_path, watchlist=CODES[:15], lost_after_s=1.0)
    with trio.fail_after(TIMEOUT_S + 20):
        async with service(s) as running:
            assert running.sim is not None
            control = running.sim.control
            await wait_for(lambda: streaming(running), "streaming")
            await in_sync(running, "picks registered")
            usage = running.slots.manager.usage()
            assert (usage["kis-1"].capacity, usage["kis-2"].capacity) == (11, 12)
            assert usage["kis-1"].used + usage["kis-2"].used == 15  # spread over both
            assert abs(usage["kis-1"].used - usage["kis-2"].used) <= 1
            # client demand fills the rest (8 slots), then is refused
            url = f"{running.ws_url}?token={tok(running, 'alice', accounts=(ACCOUNT,))}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                wanted = list(CODES[20:30])
                replies = await subscribe_all(ws, wanted)
                granted = [c for c in wanted if replies[c]["type"] == "subscribed"]
                refused = [c for c in wanted if replies[c]["type"] == "error"]
                assert granted == wanted[:8]
                assert [replies[c]["code"] for c in refused] == ["no_slot", "no_slot"]
                await in_sync(running, "demand registered")
                # the demanded codes stream to the client: the slot is real
                assert await prices_of(ws, set(granted), 3) <= set(granted)

                # a buy fill of a code nobody watches: a holding, which evicts the oldest demand
                held = CODES[45]
                control.place_order(held, "buy", 10)
                lost = await recv_type(
                    ws, "error", skip=("price_update", "ping", "order_update", "subscribed")
                )
                assert (lost["code"], lost["topic"]) == ("slot_lost", f"price:{granted[0]}")
                # the subscription ended with its slot: asking again is a new claim, which
                # the full pool refuses (not an echo of "subscribed" with no data behind it)
                assert f"price:{granted[0]}" not in running.hub.subscriptions()
                await send(ws, type="subscribe", topic=f"price:{granted[0]}")
                again = await recv_type(
                    ws, "error", skip=("price_update", "ping", "order_update", "subscribed")
                )
                assert (again["code"], again["topic"]) == ("no_slot", f"price:{granted[0]}")
                await in_sync(running, "holding registered")
                slot = running.slots.manager.slot("H0STCNT0", held)
                assert slot is not None and slot.priority.name == "HOLDING"
                listing = await get_json(running, "/api/slots")
                row = next(r for r in listing["slots"] if r["code"] == held)
                assert (row["session"], row["priority"], row["claims"]) == (
                    slot.session,
                    "holding",
                    ["holding"],
                )
                assert row["subscribed_at"] == slot.subscribed_at > 0
                assert row["last_data_at"] is None or row["last_data_at"] >= row["subscribed_at"]
                demand_rows = [r for r in listing["slots"] if r["priority"] == "demand"]
                assert sorted(r["code"] for r in demand_rows) == sorted(granted[1:])
                assert listing["pending"] == [] and len(listing["recent"]) == 20
                # holdings are the accounts' business: a user sees the slots without them
                public = await get_json(running, "/api/slots", role="user")
                assert "recent" not in public
                assert [r for r in public["slots"] if r["code"] == held] == []
                assert len(public["slots"]) == len(listing["slots"]) - 1
                # used counts what is listed (the holding-only slot is not told by the count)
                held_on = slot.session
                assert public["usage"] == {
                    n: {**u, "used": u["used"] - (n == held_on)}
                    for n, u in listing["usage"].items()
                }
                assert public["slots"] == sorted(
                    public["slots"], key=lambda r: (r["session"], r["tr_id"], r["code"])
                )

                # kis-2's account is suspended: lost for good after 1 s, its holding and picks
                # move to kis-1, evicting demand; what does not fit waits
                control.refuse_app_key(KEY_2)
                await wait_for(
                    lambda: "kis-2" in running.slots.as_dict()["lost_sessions"],
                    "kis-2 lost",
                    timeout=10,
                )
                await in_sync(running, "moved to kis-1")
                mine = running.slots.manager.registrations("kis-1")
                assert ("H0STCNT0", held) in mine
                priorities = {r.priority.name for r in running.slots.manager.slots()}
                assert priorities <= {"HOLDING", "PICK"}  # demand made room
                assert len(running.slots.manager.pending()) == 16 - 11  # 15 picks + 1 holding
                assert running.slots.notice_session == "kis-1"  # it never left

                # the account reopens: kis-2 is back, the waiting picks are registered again
                control.refuse_app_key(KEY_2, refused=False)
                await wait_for(
                    lambda: running.slots.as_dict()["lost_sessions"] == [], "kis-2 back", timeout=10
                )
                await in_sync(running, "back in sync")
                assert running.slots.manager.pending() == []
                picks = {("H0STCNT0", c) for c in CODES[:15]}
                assert picks <= desired(running)["kis-1"] | desired(running)["kis-2"]
                assert running.slots.stats["reconciled"] == 0
    # every decision was stored with its reason
    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        actions = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT action FROM slot_audit"))}
    engine.dispose()
    assert {"grant", "refuse", "evict", "move"} <= actions, actions


async def test_plain_reconnect_and_demand_while_a_session_reconnects(tmp_path: Path) -> None:
    s = two_sessions(tmp_path, watchlist=CODES[:8], lost_after_s=60.0)
    with trio.fail_after(TIMEOUT_S + 20):
        async with service(s) as running:
            assert running.sim is not None
            control = running.sim.control
            manager = running.slots.manager
            await wait_for(lambda: streaming(running), "streaming")
            await in_sync(running, "picks registered")
            before = desired(running)
            assert {n: len(r) for n, r in before.items()} == {"kis-1": 5, "kis-2": 4}  # + notice

            # the drop fault: both sessions close and reconnect; nothing moves
            assert control.drop_all() == 2
            await wait_for(lambda: all(f.reconnects >= 1 for f in running.feeds), "reconnects")
            await wait_for(lambda: streaming(running), "streaming again")
            await in_sync(running, "registered again")
            assert desired(running) == before
            assert running.slots.stats["sessions_lost"] == 0
            assert "move" not in {a.action for a in manager.audit_log}

            # kis-2 cannot reconnect for a while (its key refused): down, not lost
            control.refuse_app_key(KEY_2)
            await wait_for(lambda: not manager.is_up("kis-2"), "kis-2 seen down", timeout=5)
            dropped = running.slots.stats["ops_dropped"]
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                wanted = list(CODES[30:40])
                replies = await subscribe_all(ws, wanted)
                assert {m["type"] for m in replies.values()} == {"subscribed"}
                on = {c: manager.slot("H0STCNT0", c).session for c in wanted}  # type: ignore
                # kis-1 (up) takes what it has room for, though kis-2 has more; the rest waits
                # on kis-2's free room rather than being refused
                assert [on[c] for c in wanted] == ["kis-1"] * 7 + ["kis-2"] * 3
                assert running.slots.stats["ops_dropped"] == dropped + 3
                assert await prices_of(ws, set(wanted[:7]), 2) <= set(wanted[:7])
                await in_sync(running, "kis-1 registered its demand", only="kis-1")
                assert upstream(running)["kis-2"] == set()
                # kis-2 comes back before it counts as lost: it registers its slots, the new
                # demand included, and the client gets those prices too
                control.refuse_app_key(KEY_2, refused=False)
                await wait_for(lambda: manager.is_up("kis-2"), "kis-2 up", timeout=10)
                await in_sync(running, "kis-2 registered its demand")
                assert await prices_of(ws, set(wanted[7:]), 2) <= set(wanted[7:])
            assert running.slots.stats["sessions_lost"] == 0
            assert running.slots.stats["reconciled"] == 0


async def test_notice_moves_to_the_surviving_session_and_back(tmp_path: Path) -> None:
    """kis-1 carries the execution notice; its account is suspended: the notice moves to kis-2
    (whose capacity shrinks by one), fills are still followed, and it moves back when kis-1 is
    back. A sell to zero releases the holding."""
    s = two_sessions(tmp_path, watchlist=CODES[:23], lost_after_s=1.0)  # 11 + 12: full
    held = CODES[47]
    with trio.fail_after(TIMEOUT_S + 20):
        async with service(s) as running:
            assert running.sim is not None
            control = running.sim.control
            driver = running.slots
            await wait_for(lambda: streaming(running), "streaming")
            await in_sync(running, "picks registered")
            assert driver.notice_session == "kis-1" and driver.manager.pending() == []

            control.refuse_app_key(KEY_1)
            await wait_for(lambda: driver.notice_session == "kis-2", "notice moved", timeout=10)
            await in_sync(running, "notice on kis-2")
            assert NOTICE in upstream(running)["kis-2"] and upstream(running)["kis-1"] == set()
            assert driver.manager.usage() == {"kis-2": driver.manager.usage()["kis-2"]}
            assert driver.manager.usage()["kis-2"].capacity == 11

            control.place_order(held, "buy", 5)  # the fill notice comes over kis-2
            await wait_for(
                lambda: running.state.accounts.positions_by_code().get(held) == 5, "fill followed"
            )
            slot = driver.manager.slot("H0STCNT0", held)
            assert slot is not None and (slot.session, slot.priority.name) == ("kis-2", "HOLDING")
            await in_sync(running, "holding registered")

            control.refuse_app_key(KEY_1, refused=False)
            await wait_for(lambda: driver.notice_session == "kis-1", "notice back", timeout=10)
            await in_sync(running, "notice back on kis-1")
            assert NOTICE not in upstream(running)["kis-2"]
            assert {n: u.capacity for n, u in driver.manager.usage().items()} == {
                "kis-1": 11,
                "kis-2": 12,
            }
            assert driver.stats["notice_moves"] == 2

            control.place_order(held, "sell", 5)  # over kis-1 again: sold out
            await wait_for(
                lambda: held not in running.state.accounts.positions_by_code(), "sell followed"
            )
            await wait_for(
                lambda: driver.manager.slot("H0STCNT0", held) is None, "holding released"
            )
            await in_sync(running, "released upstream")
            assert driver.manager.pending() == []  # the pick it evicted is back


# -- holdings from the broker's positions -----------------------------------------------------


async def test_holdings_from_positions_at_start_and_drift_corrected(tmp_path: Path) -> None:
    before_today, elsewhere = "293490", "263750"  # not on the test watchlist
    s = make_settings(
        tmp_path,
        hts_id="demo",
        scanner_slots=0,
        positions_every_s=0.3,
        sim={"demo_positions": ((before_today, 9, 20_000.0),)},
    )
    assert {before_today, elsewhere}.isdisjoint(s.kis.watchlist)
    keys = {KEY_1: "kis-1"}
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            control = running.sim.control
            # started() comes after the first answer: the holding is there before any connect
            assert running.state.accounts.positions_by_code() == {before_today: 9}
            slot = running.slots.manager.slot("H0STCNT0", before_today)
            assert slot is not None and slot.priority.name == "HOLDING"
            await wait_for(lambda: streaming(running), "streaming")
            await in_sync(running, "holding registered", keys)
            # drift: a trade made elsewhere, and the old position sold elsewhere
            control.set_position(elsewhere, 4, 35_000.0)
            control.set_position(before_today, 0)
            await wait_for(
                lambda: running.state.accounts.positions_by_code() == {elsewhere: 4},
                "drift corrected",
            )
            await wait_for(
                lambda: running.slots.manager.slot("H0STCNT0", before_today) is None,
                "old holding released",
            )
            assert running.slots.manager.slot("H0STCNT0", elsewhere) is not None
            await in_sync(running, "holdings follow", keys)
            url = f"{running.ws_url}?token={tok(running, 'alice', accounts=(ACCOUNT,))}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="get_account")
                acct = (await recv_type(ws, "account"))["data"]
            assert [(p["symbol"], p["quantity"], p["avg_price"]) for p in acct["positions"]] == [
                (elsewhere, 4, 35_000.0)
            ]
            assert running.positions.corrected == 3 and running.positions.failures == 0
            status = await get_json(running, "/api/ws/status")
    assert status["positions"]["source"] == "kis inquire-balance 5012****01"
    assert status["positions"]["syncs"] >= 2


async def test_holdings_and_account_survive_a_restart(tmp_path: Path) -> None:
    # The simulator restarts with the service (and its account with it), so no positions
    # reconciliation here: this is about the day's notices replayed from the store.
    s = make_settings(tmp_path, hts_id="demo", scanner_slots=0, positions_every_s=0.0)
    held = "293490"  # not on the test watchlist
    assert held not in s.kis.watchlist
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            await wait_for(
                lambda: running.feeds[0].subscriptions.get("H0STCNI0:demo") == "subscribed",
                "notices registered",
            )
            running.sim.control.place_order(held, "buy", 7)
            await wait_for(
                lambda: running.state.accounts.positions_by_code() == {held: 7}, "the fill"
            )
            await wait_for(
                lambda: running.slots.manager.slot("H0STCNT0", held) is not None, "holding slot"
            )
        async with service(s) as again:
            assert again.state.accounts.positions_by_code() == {held: 7}
            slot = again.slots.manager.slot("H0STCNT0", held)
            assert slot is not None and slot.priority.name == "HOLDING"
            url = f"{again.ws_url}?token={tok(again, 'alice', accounts=(ACCOUNT,))}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="get_account")
                acct = (await recv_type(ws, "account"))["data"]
    assert [(p["symbol"], p["quantity"]) for p in acct["positions"]] == [(held, 7)]
    assert {o["status"] for o in acct["orders"]} == {"filled"}


# -- scanner and picks ------------------------------------------------------------------------


async def test_movers_become_scanner_claims(tmp_path: Path) -> None:
    """The mover scanner's top codes (scanner_slots of them) are claimed at SCANNER priority
    every scanner_every_s, beside the codes posted to /api/watchlist/scanner."""
    s = make_settings(
        tmp_path,
        scanner_slots=2,
        scanner_every_s=0.3,
        scanner_dwell_s=0.0,
        market_movers_every_s=0.0,  # the streamed movers only (market-wide finds: below)
    )
    posted = "293490"  # not on the watchlist
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            manager = running.slots.manager

            def scanner_keys() -> set[tuple[str, str]]:
                return {
                    (r.tr_id, r.code)
                    for r in manager.slots()
                    if "SCANNER" in {c.name for c in r.claims}
                }

            await wait_for(lambda: len(scanner_keys()) == 2, "two movers claimed")
            movers = scanner_keys()
            assert {c for _, c in movers} <= set(s.kis.watchlist)  # what streams can move
            for key in movers:
                assert manager.claims(*key)[0].name == "PICK"  # joined in place: no churn
            admin = {"Authorization": f"Bearer {tok(running, 'ops', role='admin')}"}
            async with httpx.AsyncClient(base_url=running.url) as http:
                r = await http.post(
                    "/api/watchlist/scanner", headers=admin, json={"codes": [posted]}
                )
            assert r.json() == {"scanner": [posted]}
            rec = manager.slot("H0STCNT0", posted)
            assert rec is not None and rec.priority.name == "SCANNER"
            assert ("H0STCNT0", posted) in scanner_keys() and len(scanner_keys()) == 3
            await in_sync(running, "scanner finds registered", {KEY_1: "kis-1"})


async def test_market_wide_movers_get_scanner_slots_and_stream(tmp_path: Path) -> None:
    """The broker's fluctuation ranking names codes outside the watchlist: they get scanner
    slots (the audit says which ranking and rank), and their trades reach a client."""
    s = make_settings(tmp_path, watchlist=("005930",), scanner_slots=3, market_movers_every_s=1.0)
    streamed_before = {t.code for t in DEFAULT_TICKERS}
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            manager = running.slots.manager

            def finds() -> list[str]:
                return [
                    r.code
                    for r in manager.slots()
                    if r.tr_id == "H0STCNT0" and r.code not in streamed_before
                    and "SCANNER" in {c.name for c in r.claims}
                ]  # fmt: skip

            await wait_for(lambda: len(finds()) == 3, "three market-wide finds")
            grants = {
                a.code: a.reason
                for a in manager.audit_log
                if a.action == "grant" and a.code in finds()
            }
            assert all(re.search(r"fluctuation #\d+ \+\d+\.\d\d%$", why) for why in grants.values())
            find = finds()[0]
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic=f"price:{find}")
                assert (await recv_type(ws, "subscribed"))["topic"] == f"price:{find}"
                update = await recv_type(ws, "price_update")
            assert update["symbol"] == find and update["data"]["price"] > 0
            status = await get_json(running, "/api/ws/status")
    assert status["market_movers"]["rounds"] >= 1 and status["market_movers"]["failures"] == 0


async def test_picks_and_scanner_over_rest(tmp_path: Path) -> None:
    s = make_settings(tmp_path, extra=(("H0UPCNT0", "0001"),), scanner_slots=0)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            await wait_for(lambda: running.feeds[0].state == "streaming", "streaming")
            admin = {"Authorization": f"Bearer {tok(running, 'ops', role='admin')}"}
            user = {"Authorization": f"Bearer {tok(running)}"}
            async with httpx.AsyncClient(base_url=running.url) as http:
                assert (
                    await http.put("/api/watchlist/picks", headers=user, json={"codes": ["005930"]})
                ).status_code == 403
                bad = await http.put(
                    "/api/watchlist/picks", headers=admin, json={"codes": ["5930"]}
                )
                assert bad.status_code == 400
                ok = await http.put(
                    "/api/watchlist/picks",
                    headers=admin,
                    json={"codes": ["005930", "000660"], "orderbook": ["005930"]},
                )
                # of the 10 watched codes, 005930 and 000660 stay; the book is new
                assert ok.status_code == 200 and ok.json() == {
                    "picks": 4,
                    "subscribed": 1,
                    "unsubscribed": 8,
                    "pending": [],
                }
                scan = await http.post(
                    "/api/watchlist/scanner", headers=admin, json={"codes": ["035720"]}
                )
                assert scan.json() == {"scanner": ["035720"]}
                listing = (await http.get("/api/slots", headers=user)).json()
            held = {(r["tr_id"], r["code"]): r["priority"] for r in listing["slots"]}
            assert held == {
                ("H0STCNT0", "005930"): "pick",
                ("H0STCNT0", "000660"): "pick",
                ("H0STASP0", "005930"): "pick",
                ("H0UPCNT0", "0001"): "pick",
                ("H0STCNT0", "035720"): "scanner",
            }
            assert listing["pending"] == []
            await in_sync(running, "upstream equals the manager", {KEY_1: "kis-1"})
