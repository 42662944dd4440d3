"""The simulator speaks Kiwoom (kiwoom.md §11) to a real WebSocket client: the token (§2),
LOGIN first (§3), REG and REMOVE per group with `refresh` and a limit (§4), REAL trades and
books the decoder reads (§5, §6), PINGs with a miss tolerance (§7), SYSTEM R10001/R10002/R10004
(§8); the KIS and Kiwoom reports of one trade have one key; one broker's outage leaves the
others streaming."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from tests.conftest import make_settings
from tradestream.events import Event, OrderBook, Tick
from tradestream.feeds.kis.adapter import request_approval_key
from tradestream.feeds.kis.codec import KisDecoder, PingPong, subscribe_message
from tradestream.feeds.kiwoom.codec import (
    Control,
    KiwoomDecoder,
    Login,
    Ping,
    RegReply,
    System,
    login_code,
    login_message,
    parse_token_response,
    refusal_kind,
    reg_message,
    remove_message,
    token_request,
)
from tradestream.feeds.transport import open_upstream
from tradestream.sim.server import SimHandle, run_simulator

TIMEOUT_S = 20
PING_S = 0.2
MISSES = 2  # PINGs a client may leave unanswered
LIMIT = 3  # registrations per Kiwoom session
OK_MSG = "정상적으로 처리되었습니다"


@pytest.fixture
async def sim(nursery: trio.Nursery, tmp_path: Path) -> SimHandle:
    s = make_settings(
        tmp_path,
        sim={"ping_interval_s": PING_S, "max_missed_pings": MISSES,
             "kiwoom_registration_limit": LIMIT},
    )  # fmt: skip
    handle: SimHandle = await nursery.start(run_simulator, s.sim)
    return handle


async def get_token(sim: SimHandle, app_key: str = "k1") -> str:
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        resp = await http.post("/oauth2/token", json=token_request(app_key, "secret"))
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "bearer" and body["return_code"] == 0
    return parse_token_response(body, time.time())[0]


class Client:
    """A Kiwoom client as §7 asks: every PING echoed (unless `echo` is off), REAL events kept
    in `events` in arrival order."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.decoder = KiwoomDecoder("kiwoom-1")
        self.events: list[Event] = []
        self.pings = 0
        self.echo = True

    async def send(self, text: str) -> None:
        await self.ws.send_message(text)

    async def _next(self) -> Control | None:
        out = self.decoder.decode(await self.ws.get_message(), time.time_ns())
        if isinstance(out, list):
            self.events += out
            return None
        if isinstance(out, Ping):
            self.pings += 1
            if self.echo:
                await self.ws.send_message(out.raw)
            return None
        return out

    async def control(self) -> Control:
        """The next control message that is not a PING."""
        while True:
            msg = await self._next()
            if msg is not None:
                return msg

    async def read(self) -> None:
        """Read one frame: a PING or REAL message, no other control message."""
        msg = await self._next()
        assert msg is None, msg

    async def until(self, done: Callable[[], bool]) -> None:
        """Read until `done()` (of what has been read) holds."""
        while not done():
            await self.read()

    async def closed(self) -> None:
        """Read until the server closes the connection."""
        with trio.fail_after(5):
            try:
                while True:
                    await self._next()
            except ConnectionClosed:
                return

    def ticks(self, since: int = 0) -> list[Tick]:
        return [e for e in self.events[since:] if isinstance(e, Tick)]


@asynccontextmanager
async def connected(sim: SimHandle) -> AsyncIterator[Client]:
    async with open_upstream(sim.kiwoom_ws_url, 5) as ws:
        yield Client(ws)


@asynccontextmanager
async def logged_in(sim: SimHandle, app_key: str = "k1") -> AsyncIterator[Client]:
    token = await get_token(sim, app_key)
    async with connected(sim) as client:
        await client.send(login_message(token))
        assert await client.control() == Login(True, 0, "")
        yield client


def kiwoom_conns(sim: SimHandle) -> list[Any]:
    return [c for c in sim.control.conns.values() if c.protocol == "kiwoom"]


async def test_login_register_stream_remove(sim: SimHandle) -> None:
    with trio.fail_after(TIMEOUT_S):
        assert sim.kiwoom_ws_url.endswith("/api/dostk/websocket")
        async with logged_in(sim) as client:
            (conn,) = kiwoom_conns(sim)  # the Kiwoom route, not the KIS catch-all
            await client.send(reg_message("1", ["005930", "000660_NX"], ["0B"]))
            assert await client.control() == RegReply("REG", True, 0, OK_MSG)
            await client.until(lambda: len({(t.venue, t.code) for t in client.ticks()}) == 2)
            assert {(t.venue, t.code) for t in client.ticks()} == {
                ("KRX", "005930"), ("NXT", "000660")
            }  # fmt: skip
            assert all(t.price > 0 and t.volume > 0 for t in client.ticks())

            # past the limit: refused whole, nothing of it registered
            await client.send(reg_message("2", ["035420", "005380"], ["0B"]))
            assert await client.control() == RegReply("REG", False, 1, "등록 종목수 초과")
            assert conn.subs == {("0B", "005930"), ("0B", "000660_NX")}

            # REMOVE: no trade of 005930 after its reply, 000660's go on
            await client.send(remove_message("1", ["005930"], ["0B"]))
            assert await client.control() == RegReply("REMOVE", True, 0, OK_MSG)
            mark = len(client.events)
            await client.until(lambda: len(client.ticks(mark)) >= 3)
            assert {t.code for t in client.ticks(mark)} == {"000660"}

            # refresh "0": group 1 is this request's only, a book now
            await client.send(reg_message("1", ["035420"], ["0D"], refresh="0"))
            assert await client.control() == RegReply("REG", True, 0, OK_MSG)
            assert conn.subs == {("0D", "035420")}
            mark = len(client.events)
            await client.until(lambda: any(isinstance(e, OrderBook) for e in client.events[mark:]))
            assert client.ticks(mark) == []
            (b, *_) = (e for e in client.events[mark:] if isinstance(e, OrderBook))
            assert (b.venue, b.code) == ("KRX", "035420") and b.ask_prices[0] > b.bid_prices[0]

            for bad in (reg_message("1", ["999999"], ["0B"]),  # not listed
                        reg_message("1", ["005930_XX"], ["0B"]),  # no such venue
                        reg_message("1", ["005930"], ["0Z"])):  # no such type  # fmt: skip
                await client.send(bad)
                reply = await client.control()
                assert isinstance(reply, RegReply) and not reply.ok and reply.code == 1
            assert conn.subs == {("0D", "035420")}
        assert client.decoder.stats.errors == {}


async def test_a_refused_login_and_nothing_before_login(sim: SimHandle) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with connected(sim) as client:
            await client.send(login_message("not-a-token"))
            reply = await client.control()
            assert isinstance(reply, Login) and not reply.ok
            assert "[CODE=8005, MESSAGE=" in reply.message
            assert refusal_kind(login_code(reply.code, reply.message)) == "token"
            # the connection stays: a fresh token logs in
            await client.send(login_message(await get_token(sim)))
            assert await client.control() == Login(True, 0, "")
        # a revoked token is refused alike
        token = await get_token(sim)
        sim.control.revoke_credentials()
        async with connected(sim) as client:
            await client.send(login_message(token))
            reply = await client.control()
            assert isinstance(reply, Login) and login_code(reply.code, reply.message) == 8005
        # anything before LOGIN (here a KIS request): R10004, then the end
        async with connected(sim) as client:
            await client.send(subscribe_message("approval", "H0STCNT0", "005930"))
            reply = await client.control()
            assert isinstance(reply, System) and reply.code == "R10004"
            await client.closed()


async def test_one_login_per_app_key(sim: SimHandle) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with logged_in(sim, "same") as first, logged_in(sim, "other") as other:
            async with logged_in(sim, "same") as second:
                assert await first.control() == System(
                    "R10001", "동일한 App Key로 다른 접속이 발생하여 접속을 종료합니다"
                )
                await first.closed()
                await second.send(reg_message("1", ["005930"], ["0B"]))
                assert (await second.control()).ok  # type: ignore[union-attr]
                await other.send(reg_message("1", ["005930"], ["0B"]))  # another key: unharmed
                assert (await other.control()).ok  # type: ignore[union-attr]


async def test_unanswered_pings_end_the_session(sim: SimHandle) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with logged_in(sim) as client:
            client.echo = False
            seen = client.pings
            reply = await client.control()
            assert isinstance(reply, System) and reply.code == "R10002"
            assert "Heartbeat" in reply.message
            assert client.pings - seen <= MISSES
            await client.closed()
        async with connected(sim) as client:  # neither LOGIN nor echoes: R10004
            client.echo = False
            reply = await client.control()
            assert isinstance(reply, System) and reply.code == "R10004"
            await client.closed()


async def test_the_token_endpoint_refuses_as_kiwoom_does(sim: SimHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:

        async def code_of(body: dict[str, str]) -> int:
            resp = await http.post("/oauth2/token", json=body)
            assert resp.status_code == 200  # §2: return_code says, on HTTP 200
            return int(resp.json()["return_code"])

        assert await code_of(token_request("k", "s")) == 0
        assert await code_of({"grant_type": "client_credentials", "appkey": "k"}) != 0
        sim.control.refuse_app_key("closed")
        assert await code_of(token_request("closed", "s")) == 8001
        assert await code_of(token_request("k", "s")) == 0
        sim.control.reject_credentials = True
        assert await code_of(token_request("k", "s")) == 8001
        sim.control.reject_credentials = False
        # the same path with a form is LS's (ls.md §2)
        ls = await http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials", "appkey": "a", "appsecretkey": "b"},
        )
        assert ls.status_code == 200 and ls.json()["access_token"]


class KisClient:
    """A KIS client of the same simulator: PINGPONGs echoed, events kept."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.decoder = KisDecoder("kis-1")
        self.events: list[Event] = []

    async def read(self) -> None:
        out = self.decoder.decode(await self.ws.get_message(), time.time_ns())
        if isinstance(out, PingPong):
            await self.ws.send_message(out.raw)
        elif isinstance(out, list):
            self.events += out


@asynccontextmanager
async def kis_client(sim: SimHandle, codes: list[str], trs: list[str]) -> AsyncIterator[KisClient]:
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        approval = await request_approval_key(http, "kis-key", "secret")
    async with open_upstream(sim.ws_url, 5) as ws:
        for tr in trs:
            for code in codes:
                await ws.send_message(subscribe_message(approval, tr, code))
        yield KisClient(ws)


def keys(events: list[Event], kind: type[Tick] | type[OrderBook]) -> set[Any]:
    return {e.key for e in events if isinstance(e, kind)}


async def test_kis_and_kiwoom_report_the_same_trades_and_books(sim: SimHandle) -> None:
    """One market: the trades and books of a code come to both brokers' clients alike, and
    the natural keys (which the store and the pipeline dedupe on) are equal."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            logged_in(sim) as kiwoom,
            kis_client(sim, ["005930"], ["H0STCNT0", "H0STASP0"]) as kis,
        ):
            await kiwoom.send(reg_message("1", ["005930"], ["0B", "0D"]))
            assert (await kiwoom.control()).ok  # type: ignore[union-attr]
            done = trio.Event()

            def enough() -> bool:
                return (
                    len(keys(kis.events, Tick) & keys(kiwoom.events, Tick)) >= 10
                    and len(keys(kis.events, OrderBook) & keys(kiwoom.events, OrderBook)) >= 2
                )

            async def pump(read: Callable[[], Awaitable[None]]) -> None:
                while not enough():
                    await read()
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, kis.read)
                nursery.start_soon(pump, kiwoom.read)
                await done.wait()
                nursery.cancel_scope.cancel()
        # between the first and the last trade both saw, each saw every trade the other did
        common = keys(kis.events, Tick) & keys(kiwoom.events, Tick)
        lo, hi = min(k[3] for k in common), max(k[3] for k in common)
        assert {k for k in keys(kis.events, Tick) if lo <= k[3] <= hi} == {
            k for k in keys(kiwoom.events, Tick) if lo <= k[3] <= hi
        }
        assert kiwoom.decoder.stats.errors == {} and kis.decoder.stats.errors == {}


async def ws_refused(url: str) -> bool:
    """Whether the WebSocket handshake to `url` is refused."""
    refused = False
    try:
        async with open_upstream(url, 5):
            pass
    except* ConnectionRejected:
        refused = True
    return refused


async def test_one_broker_down_while_the_other_streams(sim: SimHandle) -> None:
    """A Kiwoom outage (at /sim/faults) drops its sessions and refuses its handshakes and
    token calls, while a KIS client streams on and the LS token call is answered."""
    with trio.fail_after(TIMEOUT_S):
        async with httpx.AsyncClient(base_url=sim.rest_url) as http:

            async def fault(**body: object) -> int:
                return (await http.post("/sim/faults", json=body)).status_code

            assert await fault(down_s=1, broker="nyse") == 400
            async with kis_client(sim, ["005930"], ["H0STCNT0"]) as kis:
                async with logged_in(sim) as kiwoom:
                    assert await fault(down_s=60, broker="kiwoom") == 200
                    await kiwoom.closed()
                assert sim.control.is_down("kiwoom") and not sim.control.is_down("kis")
                assert await ws_refused(sim.kiwoom_ws_url)
                token = await http.post("/oauth2/token", json=token_request("k1", "s"))
                assert token.status_code == 503
                ls = await http.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials", "appkey": "a", "appsecretkey": "b"},
                )
                assert ls.status_code == 200
                before = len(kis.events)
                while len(kis.events) < before + 5:  # KIS streams on
                    await kis.read()
                assert await fault(down_s=0, broker="kiwoom") == 200  # over
                async with logged_in(sim) as kiwoom:
                    await kiwoom.send(reg_message("1", ["005930"], ["0B"]))
                    assert (await kiwoom.control()).ok  # type: ignore[union-attr]
                    await kiwoom.until(lambda: bool(kiwoom.ticks()))
            assert sim.control.drop_all(broker="kiwoom") == 0
            with pytest.raises(ValueError):
                sim.control.go_down(1.0, broker="nyse")
