"""The slot manager against the simulator, which enforces the registration limit: two KIS
sessions and 60 candidate codes; picks, client demand, a holding from a fill, a session lost
for good and back. After every step, what the simulator has registered per session equals
the manager's state."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import make_settings
from tests.e2e.test_gateway import recv_type, tok
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream.service import Running
from tradestream.sim.market import DEFAULT_TICKERS

CODES = tuple(t.code for t in DEFAULT_TICKERS) + tuple(f"9000{i:02d}" for i in range(10))
KEY_2 = "second-appkey"
LIMIT = 12  # per session in the simulator: 11 usable on kis-1 (one notice), 12 on kis-2 ...
MARGIN = 0  # ... with no spare kept


def upstream(running: Running) -> dict[str, set[tuple[str, str]]]:
    """What the simulator holds per session (by app key), notices left out."""
    assert running.sim is not None
    names = {"sim-appkey": "kis-1", KEY_2: "kis-2"}
    out: dict[str, set[tuple[str, str]]] = {"kis-1": set(), "kis-2": set()}
    for conn in running.sim.control.conns.values():
        if conn.protocol == "kis" and conn.app_key in names:
            out[names[conn.app_key]] |= {s for s in conn.subs if not s[0].startswith("H0STCNI")}
    return out


def desired(running: Running) -> dict[str, set[tuple[str, str]]]:
    return {n: set(running.slots.registrations(n)) for n in ("kis-1", "kis-2")}


async def in_sync(running: Running, what: str, session: str | None = None) -> None:
    def same() -> bool:
        up, want = upstream(running), desired(running)
        return up == want if session is None else up[session] == want[session]
    try:
        await wait_for(same, what)
    except trio.TooSlowError:
        up, want = upstream(running), desired(running)
        raise AssertionError(f"{what}: upstream - desired {[(n, up[n] - want[n]) for n in up]}; "
                             f"desired - upstream {[(n, want[n] - up[n]) for n in up]}; "
                             f"feeds {[f.subscriptions for f in running.feeds]}") from None


async def test_two_sessions_sixty_codes(tmp_path: Path) -> None:
    s = make_settings(tmp_path, sim={"tickers": CODES, "registration_limit": LIMIT},
                      watchlist=CODES[:15], hts_id="demo", app_keys=((KEY_2, "secret-2"),),
                      slot_margin=MARGIN, registration_limit=LIMIT, lost_after_s=1.0,
                      scanner_slots=0)
    s = replace(s, gateway=replace(s.gateway, max_subscriptions=50))
    with trio.fail_after(TIMEOUT_S + 20):
        async with service(s) as running:
            assert running.sim is not None
            control = running.sim.control
            await wait_for(lambda: all(f.state == "streaming" for f in running.feeds), "streaming")
            await in_sync(running, "picks registered")
            usage = running.slots.manager.usage()
            assert (usage["kis-1"].capacity, usage["kis-2"].capacity) == (11, 12)
            assert usage["kis-1"].used + usage["kis-2"].used == 15  # spread over both
            assert abs(usage["kis-1"].used - usage["kis-2"].used) <= 1
            # client demand fills the rest (8 slots), then is refused
            url = f"{running.ws_url}?token={tok(running, 'alice', accounts=('5012345601',))}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                wanted = CODES[20:30]
                for code in wanted:
                    await send(ws, type="subscribe", topic=f"price:{code}")
                replies: dict[str, dict[str, Any]] = {}
                while len(replies) < len(wanted):
                    m = await recv(ws)
                    if m["type"] in ("subscribed", "error"):
                        replies[m["topic"].removeprefix("price:")] = m
                granted = [c for c in wanted if replies[c]["type"] == "subscribed"]
                refused = [c for c in wanted if replies[c]["type"] == "error"]
                assert granted == list(wanted[:8])
                assert [replies[c]["code"] for c in refused] == ["no_slot", "no_slot"]
                await in_sync(running, "demand registered")
                # the demanded codes stream to the client: the slot is real
                got: set[str] = set()
                while len(got) < 3:
                    m = await recv(ws)
                    if m["type"] == "price_update":
                        got.add(m["symbol"])
                assert got <= set(granted)

                # a buy fill of a code nobody watches: a holding, which evicts the oldest demand
                held = CODES[45]
                control.place_order(held, "buy", 10)
                lost = await recv_type(ws, "error", skip=("price_update", "ping", "order_update",
                                                          "subscribed"))
                assert (lost["code"], lost["topic"]) == ("slot_lost", f"price:{granted[0]}")
                await in_sync(running, "holding registered")
                slot = running.slots.manager.slot("H0STCNT0", held)
                assert slot is not None and slot.priority.name == "HOLDING"
                async with httpx.AsyncClient(base_url=running.url) as http:
                    listing = (await http.get("/api/slots",
                                              params={"token": tok(running)})).json()
                row = next(r for r in listing["slots"] if r["code"] == held)
                assert row["priority"] == "holding" and row["session"] in ("kis-1", "kis-2")
                assert {"session", "tr_id", "code", "priority", "subscribed_at",
                        "last_data_at"} <= set(row)

                # kis-2's account is suspended: lost for good after 1 s, its holding and picks
                # move to kis-1, evicting demand; what does not fit waits
                control.refuse_app_key(KEY_2)
                await wait_for(lambda: "kis-2" in running.slots.as_dict()["lost_sessions"],
                               "kis-2 lost", timeout=10)
                await in_sync(running, "moved to kis-1", "kis-1")
                mine = running.slots.manager.registrations("kis-1")
                assert ("H0STCNT0", held) in mine
                priorities = {r.priority.name for r in running.slots.manager.slots()}
                assert priorities <= {"HOLDING", "PICK"}  # demand made room
                assert len(running.slots.manager.pending()) == 16 - 11  # 15 picks + 1 holding

                # the account reopens: kis-2 is back, the waiting picks are registered again
                control.refuse_app_key(KEY_2, refused=False)
                await wait_for(lambda: running.slots.as_dict()["lost_sessions"] == [],
                               "kis-2 back", timeout=10)
                await in_sync(running, "back in sync")
                assert running.slots.manager.pending() == []
                picks = {("H0STCNT0", c) for c in CODES[:15]}
                assert picks <= desired(running)["kis-1"] | desired(running)["kis-2"]
    # every decision was stored with its reason
    import sqlalchemy as sa

    engine = sa.create_engine(s.store.url)
    with engine.connect() as conn:
        actions = {r[0] for r in conn.execute(sa.text("SELECT DISTINCT action FROM slot_audit"))}
    engine.dispose()
    assert {"grant", "refuse", "evict", "move"} <= actions, actions


async def test_holdings_and_account_survive_a_restart(tmp_path: Path) -> None:
    s = make_settings(tmp_path, hts_id="demo", scanner_slots=0)
    held = "293490"  # not on the test watchlist
    assert held not in s.kis.watchlist
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            assert running.sim is not None
            await wait_for(lambda: running.feeds[0].subscriptions.get("H0STCNI0:demo")
                           == "subscribed", "notices registered")
            running.sim.control.place_order(held, "buy", 7)
            await wait_for(lambda: running.state.accounts.positions_by_code() == {held: 7},
                           "the fill")
            await wait_for(lambda: running.slots.manager.slot("H0STCNT0", held) is not None,
                           "holding slot")
        async with service(s) as again:
            assert again.state.accounts.positions_by_code() == {held: 7}
            slot = again.slots.manager.slot("H0STCNT0", held)
            assert slot is not None and slot.priority.name == "HOLDING"
            url = f"{again.ws_url}?token={tok(again, 'alice', accounts=('5012345601',))}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="get_account")
                acct = (await recv_type(ws, "account"))["data"]
    assert [(p["symbol"], p["quantity"]) for p in acct["positions"]] == [(held, 7)]
    assert {o["status"] for o in acct["orders"]} == {"filled"}


async def test_picks_and_scanner_over_rest(tmp_path: Path) -> None:
    s = make_settings(tmp_path, extra=(("H0UPCNT0", "0001"),), scanner_slots=0)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            await wait_for(lambda: running.feeds[0].state == "streaming", "streaming")
            admin = {"Authorization": f"Bearer {tok(running, 'ops', role='admin')}"}
            user = {"Authorization": f"Bearer {tok(running)}"}
            async with httpx.AsyncClient(base_url=running.url) as http:
                assert (await http.put("/api/watchlist/picks", headers=user,
                                       json={"codes": ["005930"]})).status_code == 403
                bad = await http.put("/api/watchlist/picks", headers=admin,
                                     json={"codes": ["5930"]})
                assert bad.status_code == 400
                ok = await http.put("/api/watchlist/picks", headers=admin, json={
                    "codes": ["005930", "000660"], "orderbook": ["005930"]})
                assert ok.status_code == 200 and ok.json()["pending"] == []
                scan = await http.post("/api/watchlist/scanner", headers=admin,
                                       json={"codes": ["035720"]})
                assert scan.json() == {"scanner": ["035720"]}
                listing = (await http.get("/api/slots", headers=user)).json()
            held = {(r["tr_id"], r["code"]): r["priority"] for r in listing["slots"]}
            assert held == {("H0STCNT0", "005930"): "pick", ("H0STCNT0", "000660"): "pick",
                            ("H0STASP0", "005930"): "pick", ("H0UPCNT0", "0001"): "pick",
                            ("H0STCNT0", "035720"): "scanner"}
            assert listing["pending"] == []
            await in_sync_one(running)


async def in_sync_one(running: Running) -> None:
    """One session: the simulator holds exactly the manager's registrations."""
    assert running.sim is not None

    def same() -> bool:
        subs = [c.subs for c in running.sim.control.conns.values()  # type: ignore[union-attr]
                if c.protocol == "kis"]
        return len(subs) == 1 and {x for x in subs[0] if not x[0].startswith("H0STCNI")} == \
            set(running.slots.registrations("kis-1"))

    await wait_for(same, "upstream equals the manager")
