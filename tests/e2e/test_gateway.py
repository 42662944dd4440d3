"""Gateway conformance over real WebSockets: every client message and topic, auth, isolation,
limits, cadence, slow consumers and metrics, against the whole tree and the simulator."""

from __future__ import annotations

import socket
import statistics
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from trio_websocket import open_websocket_url as raw_open

from tests.conftest import make_settings
from tests.e2e.test_service import TIMEOUT_S, open_websocket_url, recv, send, service, wait_for
from tradestream.config import Settings
from tradestream.hub import Msg
from tradestream.roles import Running

SECRET = "test-secret-test-secret-test-secret"
ACCOUNT = "5012345601"  # the simulator's demo account


def gw(s: Settings, **changes: object) -> Settings:
    return replace(s, gateway=replace(s.gateway, **changes))


async def recv_type(
    ws: WebSocketConnection,
    kind: str,
    *,
    skip: tuple[str, ...] = ("price_update", "orderbook_update", "ping", "news", "order_update"),
) -> dict[str, Any]:
    """The next message of type `kind`, skipping streaming updates (fails on anything else)."""
    while True:
        msg = await recv(ws)
        if msg["type"] == kind:
            return msg
        assert msg["type"] in skip, msg


async def closed_with(ws: WebSocketConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        with trio.fail_after(10):
            while True:
                await ws.get_message()
    return info.value.reason.code, info.value.reason.reason or ""


def tok(running: Running, user: str = "alice", **kw: Any) -> str:
    return running.auth.issue(user, **kw)


# -- auth -----------------------------------------------------------------------------------------


async def test_auth_paths_and_close_codes(tmp_path: Path) -> None:
    s = gw(make_settings(tmp_path), handshake_timeout_s=0.3, jwt_leeway_s=0.0)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            base = running.ws_url
            expired = jwt.encode(
                {"sub": "alice", "exp": int(time.time()) - 10}, SECRET, algorithm="HS256"
            )
            forged = jwt.encode(
                {"sub": "alice"}, "another-secret-another-secret-xx", algorithm="HS256"
            )
            for url, code, reason in (
                (f"{base}?token={expired}", 4419, "token expired"),
                (f"{base}?token={forged}", 4401, "Signature verification failed"),
                (base, 4401, "no token within 0.3s"),  # says nothing: handshake timeout
            ):
                async with open_websocket_url(url) as ws:
                    got = await closed_with(ws)
                    assert got[0] == code and reason in got[1], got
            # the Authorization header
            async with raw_open(
                base, extra_headers=[(b"Authorization", f"Bearer {tok(running)}".encode())]
            ) as ws:
                assert (await recv(ws))["type"] == "connected"
            # a token in the first message (browsers cannot set headers)
            async with open_websocket_url(base) as ws:
                await send(ws, type="auth", token=tok(running, "carol"))
                hello = await recv(ws)
                assert (hello["type"], hello["user_id"]) == ("connected", "carol")
            assert running.metrics.auth_failures.labels("expired")._value.get() == 1
            assert running.metrics.auth_failures.labels("invalid")._value.get() == 2


async def test_connection_closes_when_its_token_expires_unless_refreshed(tmp_path: Path) -> None:
    s = gw(make_settings(tmp_path), jwt_leeway_s=0.0)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            # 2 s of life, to the microsecond (issue() rounds to whole seconds): room for
            # the refresh below on a loaded machine, and still a real expiry mid-session
            short = jwt.encode(
                {"sub": "alice", "exp": time.time() + 2.0}, SECRET, algorithm="HS256"
            )
            async with (
                open_websocket_url(f"{running.ws_url}?token={short}") as doomed,
                open_websocket_url(f"{running.ws_url}?token={short}") as refreshed,
            ):
                await recv(doomed)
                await recv(refreshed)
                await send(refreshed, type="auth", token=tok(running, ttl_s=3600))
                msg = await recv_type(refreshed, "authenticated")
                assert msg["expires_at"] > time.time() + 3000
                await send(refreshed, type="auth", token=tok(running, "mallory"))
                assert (await recv_type(refreshed, "error"))["code"] == "auth_failed"
                # other grants than the connection was authorised with: refused
                await send(refreshed, type="auth", token=tok(running, accounts=("9999999901",)))
                assert "same role and accounts" in (await recv_type(refreshed, "error"))["message"]
                await send(refreshed, type="auth", token=tok(running, role="admin"))
                assert (await recv_type(refreshed, "error"))["code"] == "auth_failed"
                code, reason = await closed_with(doomed)
                assert (code, reason) == (4419, "token expired")
                await trio.sleep(0.5)  # past the first token's expiry: still served
                await send(refreshed, type="ping")
                assert (await recv_type(refreshed, "pong"))["type"] == "pong"


# -- isolation and roles --------------------------------------------------------------------------


async def test_orders_and_accounts_are_isolated_per_user(tmp_path: Path) -> None:
    s = make_settings(tmp_path, hts_id="demo")
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            owner = tok(running, "alice", accounts=(ACCOUNT,))
            stranger = tok(running, "bob", accounts=("9999999901",))
            admin = tok(running, "root", role="admin")
            nobody = tok(running, "eve")
            async with (
                open_websocket_url(f"{running.ws_url}?token={owner}") as a,
                open_websocket_url(f"{running.ws_url}?token={stranger}") as b,
                open_websocket_url(f"{running.ws_url}?token={admin}") as r,
                open_websocket_url(f"{running.ws_url}?token={nobody}") as e,
            ):
                for ws in (a, b, r, e):
                    await recv(ws)
                    await send(ws, type="subscribe", topic="order:*")
                for ws in (a, b, r):
                    assert (await recv_type(ws, "subscribed"))["topic"] == "order:*"
                err = await recv_type(e, "error")
                assert (err["code"], err["topic"]) == ("forbidden", "order:*")
                assert running.sim is not None
                await wait_for(
                    lambda: running.feeds[0].subscriptions.get("H0STCNI0:demo") == "subscribed",
                    "notices registered",
                )
                running.sim.control.place_order("005930", "buy", 10)
                mine = await recv_type(a, "order_update", skip=("ping",))
                assert mine["data"]["account"] == ACCOUNT
                assert mine["data"]["symbol"] == "005930"
                seen = await recv_type(r, "order_update", skip=("ping",))  # admin: everyone's
                assert seen["order_id"] == mine["order_id"]
                # the order notice, then its fill
                m = await recv_type(a, "order_update", skip=("ping",))
                assert (m["order_id"], m["data"]["status"], m["event"]["kind"]) == (
                    mine["order_id"],
                    "filled",
                    "fill",
                )
                await send(a, type="subscribe", topic=f"order:{mine['order_id']}")
                await recv_type(a, "subscribed", skip=("ping",))
                await send(a, type="get_account")
                acct = (await recv_type(a, "account"))["data"]
                assert acct["accounts"] == [ACCOUNT]
                assert acct["positions"] == [
                    {
                        "symbol": "005930",
                        "quantity": 10,
                        "avg_price": acct["positions"][0]["avg_price"],
                        "account": ACCOUNT,
                    }
                ]
                assert acct["orders"][0]["order_id"] == mine["order_id"]
                await send(b, type="get_account")
                other = (await recv_type(b, "account"))["data"]
                assert other == {"accounts": ["9999999901"], "positions": [], "orders": []}
                # bob got no order_update at all: the next message after a ping is the pong
                await send(b, type="ping", timestamp="x")
                assert (await recv_type(b, "pong", skip=("ping",)))["timestamp"] == "x"
                assert m["data"]["filled_quantity"] == 10


async def test_topic_roles(tmp_path: Path) -> None:
    s = gw(make_settings(tmp_path), topic_roles=(("strategy", ("admin", "producer")),))
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            async with (
                open_websocket_url(f"{running.ws_url}?token={tok(running)}") as u,
                open_websocket_url(
                    f"{running.ws_url}?token={tok(running, 'p', role='producer')}"
                ) as p,
            ):
                await recv(u)
                await recv(p)
                await send(u, type="subscribe", topic="strategy:news-1")
                err = await recv_type(u, "error")
                assert (err["code"], err["topic"]) == ("forbidden", "strategy:news-1")
                assert "admin or producer" in err["message"]
                await send(p, type="subscribe", topic="strategy:news-1")
                assert (await recv_type(p, "subscribed"))["topic"] == "strategy:news-1"


# -- the protocol ---------------------------------------------------------------------------------


async def test_every_topic_and_message(tmp_path: Path) -> None:
    s = make_settings(tmp_path, ls=True, extra=(("H0STASP0", "005930"),), hts_id="demo")
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            admin = tok(running, "root", role="admin")
            async with open_websocket_url(f"{running.ws_url}?token={admin}&batch=0") as ws:
                hello = await recv(ws)
                assert hello["type"] == "connected" and hello["user_id"] == "root"
                assert isinstance(hello["client_id"], int)
                topics = [
                    "price:005930",
                    "orderbook:005930",
                    "news",
                    "news:005930",
                    "order:*",
                    "order:123",
                    "strategy:demo",
                    "signal:vcp",
                    "signal:daytrading",
                    "market-gate",
                    "market:kospi",
                    "market:kosdaq",
                    "alert",
                    "alert:005930",
                    "price:000660@1s",
                ]
                for t in topics:
                    await send(ws, type="subscribe", topic=t)
                got = set()
                while len(got) < len(topics):
                    got.add((await recv_type(ws, "subscribed"))["topic"])
                assert got == set(topics)
                seen: set[str] = set()
                while not {"price_update", "orderbook_update", "news"} <= seen:
                    seen.add((await recv(ws))["type"])
                # a message published on each hub topic reaches this client once
                hub = running.hub
                for key, kind in (
                    ("strategy:demo", "strategy_signal"),
                    ("signal:vcp", "signal_update"),
                    ("alert", "alert"),
                    ("alert:005930", "alert"),
                ):
                    assert hub.publish(key, Msg(f'{{"type":"{kind}","key":"{key}"}}', kind)) == 1
                assert (
                    hub.publish_latest(
                        "market:kospi", Msg('{"type":"index_update","index":"kospi"}', "x")
                    )
                    == 1
                )
                assert (
                    hub.publish_latest("market-gate", Msg('{"type":"market_gate_update"}', "x"))
                    == 1
                )
                want = {"strategy:demo", "signal:vcp", "alert", "alert:005930", "kospi", "gate"}
                while want:
                    m = await recv(ws)
                    if m["type"] in ("strategy_signal", "signal_update", "alert"):
                        want.remove(m["key"])
                    elif m["type"] == "index_update":
                        want.remove("kospi")
                    elif m["type"] == "market_gate_update":
                        want.remove("gate")
                await send(ws, type="get_price", symbol="005930")
                price = await recv_type(ws, "price")
                assert (price["symbol"], price["source"]) == ("005930", "memory")
                assert price["data"]["price"] > 0
                await send(ws, type="get_price", symbol="ZZZZZZ")
                assert (await recv_type(ws, "error"))["code"] == "no_data"
                for t in topics:
                    await send(ws, type="unsubscribe", topic=t)
                got = set()
                while len(got) < len(topics):
                    got.add((await recv_type(ws, "unsubscribed"))["topic"])
                assert running.hub.subscriptions() == {}


async def test_get_price_falls_back_to_the_store(tmp_path: Path) -> None:
    s = make_settings(tmp_path)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            await wait_for(lambda: "005930" in running.state.latest, "a trade of 005930")
            await wait_for(lambda: running.flusher.rows >= running.router.ticks > 0, "stored")
        last = running.state.latest["005930"].price
        s2 = replace(s, kis=replace(s.kis, watchlist=("000660",)))
        async with service(s2) as running:
            async with open_websocket_url(f"{running.ws_url}?token={tok(running)}") as ws:
                await recv(ws)
                await send(ws, type="get_price", symbol="005930")
                msg = await recv_type(ws, "price")
    assert (msg["source"], msg["data"]["price"]) == ("store", last)


async def test_ws_endpoint_presubscribes(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            base = running.ws_url.removesuffix("/api/ws") + "/ws"
            url = f"{base}?token={tok(running)}&subscribe=price:005930,bogus:1,price:000660@500ms"
            async with open_websocket_url(url) as ws:
                assert (await recv(ws))["type"] == "connected"
                assert (await recv(ws))["topic"] == "price:005930"
                err = await recv(ws)
                assert (err["type"], err["code"], err["topic"]) == (
                    "error",
                    "unknown_topic",
                    "bogus:1",
                )
                assert (await recv_type(ws, "subscribed"))["topic"] == "price:000660@500ms"
                await recv_type(ws, "price_update")


async def test_cadence_limits_the_rate_per_subscription(tmp_path: Path) -> None:
    s = make_settings(tmp_path, sim={"tick_rate": 2000.0})
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as every, open_websocket_url(url) as paced:
                await recv(every)
                await recv(paced)
                await send(every, type="subscribe", topic="price:005930")
                await send(paced, type="subscribe", topic="price:005930@500ms")
                await recv_type(every, "subscribed")
                await recv_type(paced, "subscribed")
                counts = {"every": 0, "paced": 0}
                stamps: list[float] = []

                async def count(ws: WebSocketConnection, name: str) -> None:
                    while True:
                        m = msgspec.json.decode(await ws.get_message())
                        if m["type"] == "price_update":
                            counts[name] += 1
                            if name == "paced":
                                stamps.append(trio.current_time())

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(count, every, "every")
                    nursery.start_soon(count, paced, "paced")
                    await trio.sleep(3.0)
                    nursery.cancel_scope.cancel()
    # 2,000 trades/s over the simulator's 50 codes: ~40/s for one code, versus one per 0.5 s
    assert counts["every"] > 40
    assert 3 <= counts["paced"] <= 8  # 6 periods in 3 s, plus the snapshot at subscribe
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]
    assert gaps and min(gaps) > 0.4


# -- limits ---------------------------------------------------------------------------------------


async def test_rate_limit_drops_then_closes(tmp_path: Path) -> None:
    s = gw(make_settings(tmp_path), rate_per_s=5.0, rate_burst=5, rate_close_after=20)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                for i in range(8):
                    await send(ws, type="ping", timestamp=str(i))
                replies = [await recv_type(ws, "pong") for _ in range(5)]
                assert [r["timestamp"] for r in replies] == ["0", "1", "2", "3", "4"]
                err = await recv_type(ws, "error")
                assert err["code"] == "rate_limited"
                await trio.sleep(0.5)  # tokens come back
                await send(ws, type="ping", timestamp="later")
                assert (await recv_type(ws, "pong"))["timestamp"] == "later"
            async with open_websocket_url(url) as flood:
                await recv(flood)
                for _ in range(5 + 20 + 1):  # the burst, 20 drops allowed, one more
                    await send(flood, type="ping")
                assert await closed_with(flood) == (4429, "rate limit exceeded")
    assert running.metrics.dropped_in.labels("rate_limited")._value.get() >= 3 + 20


async def test_subscription_message_and_connection_limits(tmp_path: Path) -> None:
    s = gw(
        make_settings(tmp_path),
        max_subscriptions=2,
        max_message_bytes=1024,
        max_connections_per_user=2,
        max_connections=3,
    )
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws, open_websocket_url(url) as ws2:
                await recv(ws)
                await recv(ws2)
                for t in ("news", "alert", "signal:vcp"):
                    await send(ws, type="subscribe", topic=t)
                await recv_type(ws, "subscribed")
                await recv_type(ws, "subscribed")
                err = await recv_type(ws, "error")
                assert (err["code"], err["topic"]) == ("too_many_subscriptions", "signal:vcp")
                async with open_websocket_url(url) as third:  # alice's third connection
                    assert await closed_with(third) == (4409, "at most 2 connections per user")
                bob = f"{running.ws_url}?token={tok(running, 'bob')}"
                async with open_websocket_url(bob) as b:
                    await recv(b)
                    async with open_websocket_url(
                        f"{running.ws_url}?token={tok(running, 'carl')}"
                    ) as full:
                        assert (await closed_with(full))[0] == 1013
                await ws2.send_message("x" * 2000)  # over max_message_bytes
                code, _ = await closed_with(ws2)
                assert code == 1009
                await send(ws, type="ping")
                assert (await recv_type(ws, "pong"))["type"] == "pong"
    closes = running.metrics.closes
    assert closes.labels("too_many_connections")._value.get() == 1
    assert closes.labels("server_full")._value.get() == 1


async def test_sockets_still_authenticating_count_against_the_connection_limit(
    tmp_path: Path,
) -> None:
    # long enough for the whole exchange below on a loaded machine
    s = gw(make_settings(tmp_path), max_connections=2, handshake_timeout_s=5.0)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with (
                open_websocket_url(running.ws_url) as silent1,
                open_websocket_url(running.ws_url) as silent2,
            ):
                await wait_for(lambda: running.hub.handshaking == 2, "pending")
                async with open_websocket_url(url) as late:  # the two silent ones hold it
                    assert (await closed_with(late))[0] == 1013
                for silent in (silent1, silent2):
                    assert await closed_with(silent) == (4401, "no token within 5s")
            async with open_websocket_url(url) as ws:  # room again
                assert (await recv(ws))["type"] == "connected"
            assert running.hub.handshaking == 0


async def test_sockets_waiting_for_an_auth_message_have_a_pool_of_their_own(tmp_path: Path) -> None:
    """Silent sockets fill their own pool (one here), never the room of clients that bring
    a token: one client without credentials cannot lock everybody out."""
    s = gw(make_settings(tmp_path), max_pending_handshakes=1, handshake_timeout_s=5.0)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            async with open_websocket_url(running.ws_url) as silent:
                await wait_for(lambda: running.hub.handshaking == 1, "pending")
                async with open_websocket_url(running.ws_url) as another:
                    assert (await closed_with(another))[0] == 1013
                url = f"{running.ws_url}?token={tok(running)}"
                async with open_websocket_url(url) as ws:  # a token: admitted at once
                    assert (await recv(ws))["type"] == "connected"
                await send(silent, type="auth", token=tok(running, "carol"))
                assert (await recv(silent))["user_id"] == "carol"
    assert running.metrics.closes.labels("handshakes_full")._value.get() == 1


async def test_malformed_and_mistyped_messages_get_errors_not_a_crash(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            async with open_websocket_url(f"{running.ws_url}?token={tok(running)}") as ws:
                await recv(ws)
                for raw, code in (
                    ('{"type": "subscribe", "topic": 5}', "invalid_message"),
                    ('{"type": "subscribe"}', "invalid_message"),
                    ('[{"type": "ping"}]', "invalid_message"),
                    ('"ping"', "invalid_message"),
                    ('{"type": 7}', "unknown_type"),
                    ('{"type": "get_price", "symbol": 5930}', "invalid_message"),
                    ('{"type": "get_price", "symbol": "59"}', "invalid_message"),
                    ('{"type": "subscribe", "topic": "price:5930"}', "invalid_topic"),
                    ('{"type": "subscribe", "topic": "news@1s"}', "invalid_topic"),
                    ('{"type": "subscribe", "topic": "price:005930@9h"}', "invalid_topic"),
                    ('{"type": "subscribe", "topic": ""}', "invalid_topic"),
                    ("\u0000\xff", "invalid_json"),
                    ('{"type": "ping"', "invalid_json"),
                ):
                    await ws.send_message(raw)
                    err = await recv_type(ws, "error")
                    assert err["code"] == code, (raw, err)
                    assert err["message"]
                await ws.send_message(b'{"type": "ping", "timestamp": "binary"}')
                assert (await recv_type(ws, "pong"))["timestamp"] == "binary"
                await send(ws, type="ping")
                assert (await recv_type(ws, "pong"))["type"] == "pong"
    assert running.metrics.errors.labels("invalid_message")._value.get() == 6


# -- delivery -------------------------------------------------------------------------------------


def bare(msg: dict[str, Any]) -> dict[str, Any]:
    """A message without the history's `offset` and `epoch`."""
    return {k: v for k, v in msg.items() if k not in ("offset", "epoch")}


async def test_batch_clients_get_what_is_queued_in_one_frame(settings: Settings) -> None:
    """`?batch=1`: messages queued together leave as one JSON array, in order; a client that
    did not opt in gets the same messages one object per frame (seed clients)."""
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with (
                open_websocket_url(url + "&batch=1") as batched,
                open_websocket_url(url) as plain,
            ):
                for ws in (batched, plain):
                    await recv(ws)
                    await send(ws, type="subscribe", topic="alert")
                    await recv_type(ws, "subscribed")
                for i in range(5):  # no checkpoint in between: all five queue up
                    running.hub.publish("alert", Msg(f'{{"type":"alert","i":{i}}}', "alert"))
                frame = msgspec.json.decode(await batched.get_message())
                assert [bare(m) for m in frame] == [{"type": "alert", "i": i} for i in range(5)]
                offsets = [m["offset"] for m in frame]
                assert offsets == sorted(offsets)  # the history's stamp (recovery)
                for i in range(5):
                    got = msgspec.json.decode(await plain.get_message())
                    assert bare(got) == {"type": "alert", "i": i}
                # a lone message is a plain object even for a batch client
                running.hub.publish("alert", Msg('{"type":"alert","i":5}', "alert"))
                lone = msgspec.json.decode(await batched.get_message())
                assert bare(lone) == {"type": "alert", "i": 5}


async def test_lossless_messages_that_cannot_be_queued_close_as_slow_consumer(
    tmp_path: Path,
) -> None:
    s = gw(make_settings(tmp_path), outbox_max=20)
    with trio.fail_after(TIMEOUT_S):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as slow, open_websocket_url(url) as other:
                for ws in (slow, other):
                    await recv(ws)
                await send(slow, type="subscribe", topic="alert")
                await recv_type(slow, "subscribed")
                await send(other, type="subscribe", topic="signal:vcp")
                await recv_type(other, "subscribed")
                # a burst that neither the socket's buffers (loopback: up to ~36 MB) nor the
                # outbox can hold: never dropped silently
                pad = "x" * 120_000
                for i in range(400):
                    running.hub.publish(
                        "alert", Msg(f'{{"type":"alert","i":{i},"pad":"{pad}"}}', "alert")
                    )
                running.hub.publish("signal:vcp", Msg('{"type":"signal_update"}', "signal"))
                assert await closed_with(slow) == (4008, "slow consumer")
                assert (await recv(other))["type"] == "signal_update"  # unaffected
                await send(other, type="ping")
                assert (await recv_type(other, "pong"))["type"] == "pong"
    assert running.metrics.closes.labels("slow_consumer")._value.get() == 1
    assert running.hub.discarded_total() == 20


async def test_a_client_that_stops_reading_never_delays_the_others(tmp_path: Path) -> None:
    """One client never reads; another keeps receiving lossless messages with the same latency
    while the first one's socket fills up; then the first one is dropped."""
    # the stuck client's outbox overflows while its write is blocked: one close, counted once
    s = gw(make_settings(tmp_path), send_timeout_s=1.0, outbox_max=100)
    blob = "x" * 120_000  # loopback buffers hold up to ~36 MB (tcp_rmem max + tcp_wmem max)
    with trio.fail_after(TIMEOUT_S + 10):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as stuck, open_websocket_url(url) as good:
                for ws in (stuck, good):
                    await recv(ws)
                    await send(ws, type="subscribe", topic="alert")
                    await recv_type(ws, "subscribed")
                lat: list[tuple[bool, float]] = []  # (stuck client still connected, seconds)

                async def publish_and_time(n: int) -> None:
                    for i in range(n):
                        t0 = time.perf_counter()
                        running.hub.publish(
                            "alert",
                            Msg(
                                f'{{"type":"alert","i":{i},"pad":"{blob}"}}',
                                "alert",
                                time.time_ns(),
                            ),
                        )
                        while True:
                            msg = await good.get_message()
                            batch = msgspec.json.decode(msg)
                            items = batch if isinstance(batch, list) else [batch]
                            if any(m.get("i") == i for m in items):
                                break
                        lat.append((len(running.hub.clients) == 2, time.perf_counter() - t0))
                        await trio.sleep(0.002)

                await publish_and_time(500)  # 60 MB: far beyond the socket buffers
    before = [x for connected, x in lat if connected]
    after = [x for connected, x in lat if not connected]
    assert len(before) > 50 and len(after) > 50, (len(before), len(after))
    # the stuck client was dropped for a blocked write, not for anything else
    assert running.metrics.closes.labels("send_timeout")._value.get() == 1
    assert running.metrics.closes.labels("slow_consumer")._value.get() == 0
    # the reading client's latency did not depend on the stuck one
    assert statistics.median(before) < 0.05
    assert max(before) < 0.5
    assert statistics.median(before) < 5 * statistics.median(after) + 0.005


async def test_a_backlog_left_by_a_reset_counts_as_discarded_not_written(tmp_path: Path) -> None:
    """The peer resets its connection while the server holds a backlog for it: none of that
    backlog is counted as written, all of it as discarded."""
    s = gw(make_settings(tmp_path), send_timeout_s=30.0, outbox_max=5000)
    blob = "x" * 100_000
    with trio.fail_after(TIMEOUT_S + 10):
        async with service(s) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with open_websocket_url(url) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="alert")
                await recv_type(ws, "subscribed")
                sock = ws._stream.socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                (client,) = running.hub.clients.values()
                published = 0
                while len(client.outbox) < 300:  # stop reading until a backlog builds up
                    running.hub.publish(
                        "alert", Msg(f'{{"type":"alert","i":{published},"p":"{blob}"}}', "alert")
                    )
                    published += 1
                    await trio.sleep(0.001)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # RST
                await wait_for(lambda: not running.hub.clients, "disconnected")
            written = running.metrics.written.get("alert", 0)
            discarded = running.hub.discarded_total()
    assert discarded >= 300
    assert written + discarded <= published
    assert running.metrics.closes.labels("send_timeout")._value.get() == 0


async def test_metrics_endpoint(settings: Settings) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            async with open_websocket_url(f"{running.ws_url}?token={tok(running)}") as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="price:005930")
                for _ in range(5):
                    await recv_type(ws, "price_update", skip=("subscribed", "ping"))
                await ws.send_message("{broken")
                await recv_type(ws, "error")
                async with httpx.AsyncClient(base_url=running.url) as http:
                    text = (await http.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["tradestream_ws_connections"] == 1
    assert values['tradestream_ws_messages_out_total{type="price_update"}'] >= 5
    assert values['tradestream_ws_messages_in_total{type="subscribe"}'] == 1
    assert values['tradestream_ws_errors_total{code="invalid_json"}'] == 1
    assert values["tradestream_delivery_latency_seconds_count"] >= 1
    assert values['tradestream_upstream_streaming{session="kis-1"}'] == 1
    assert values['tradestream_events_total{type="Tick"}'] > 0


async def test_a_burst_larger_than_the_socket_arrives_whole_and_in_order(
    settings: Settings,
) -> None:
    """Messages go straight onto the socket while nothing is queued (serving.py, the direct
    path); when the socket takes part of one, the rest is written before anything else, and
    what follows queues for the client's sender: the client reads every message, whole and
    in order, interleaved with a reply of its own (written under the connection's lock)."""
    pad = "y" * 100_000
    with trio.fail_after(TIMEOUT_S):
        async with service(settings) as running:
            url = f"{running.ws_url}?token={tok(running)}"
            async with raw_open(url, max_message_size=1 << 20) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="alert")
                await recv_type(ws, "subscribed")
                n = 300  # 30 MB: more than the loopback buffers take at once
                for i in range(n):
                    running.hub.publish(
                        "alert", Msg(f'{{"type":"alert","i":{i},"pad":"{pad}"}}', "alert")
                    )
                await send(ws, type="ping", timestamp="t")
                seen, pong = [], False
                while len(seen) < n or not pong:
                    msg = await recv(ws)
                    if msg["type"] == "alert":
                        assert msg["pad"] == pad
                        seen.append(msg["i"])
                    elif msg["type"] == "pong":
                        pong = True
                assert seen == list(range(n))
            assert running.hub.conflated_total() == 0  # a lossless topic never conflates
