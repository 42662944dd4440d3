"""The simulator speaks Kiwoom (kiwoom.md §11) to a real WebSocket client: the token, LOGIN
first, REG and REMOVE with their limits, REAL trades the decoder reads, PINGs with a miss
tolerance, one login per app key, and an outage of one broker while the other streams."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from tests.conftest import make_settings
from tradestream.events import Tick
from tradestream.feeds.kis.adapter import request_approval_key
from tradestream.feeds.kis.codec import KisDecoder, PingPong, subscribe_message
from tradestream.feeds.kiwoom.codec import (
    KiwoomDecoder,
    Login,
    Ping,
    RegReply,
    System,
    login_message,
    parse_token_response,
    reg_message,
    remove_message,
    token_request,
)
from tradestream.feeds.transport import open_upstream
from tradestream.sim.server import SimHandle, run_simulator

TIMEOUT_S = 20


@asynccontextmanager
async def simulator(tmp_path: Any, **sim: Any) -> AsyncIterator[SimHandle]:
    s = make_settings(tmp_path, sim={"ping_interval_s": 0.2, **sim})
    async with trio.open_nursery() as nursery:
        handle: SimHandle = await nursery.start(run_simulator, s.sim)
        try:
            yield handle
        finally:
            nursery.cancel_scope.cancel()


async def token(sim: SimHandle, app_key: str = "k1") -> str:
    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
        resp = await http.post("/oauth2/token", json=token_request(app_key, "secret"))
    assert resp.status_code == 200
    return parse_token_response(resp.json(), 0.0)[0]


async def next_control(ws: WebSocketConnection, dec: KiwoomDecoder, *, echo: bool = True) -> Any:
    """The next control message that is not a PING (echoed unless told not to)."""
    while True:
        out = dec.decode(await ws.get_message(), 0)
        if isinstance(out, Ping):
            if echo:
                await ws.send_message(out.raw)
            continue
        if not isinstance(out, list):
            return out


@asynccontextmanager
async def logged_in(sim: SimHandle, app_key: str = "k1") -> AsyncIterator[WebSocketConnection]:
    tok = await token(sim, app_key)
    async with open_upstream(sim.kiwoom_ws_url, 5) as ws:
        await ws.send_message(login_message(tok))
        reply = await next_control(ws, KiwoomDecoder("t"))
        assert reply == Login(True, 0, "")
        yield ws


async def test_login_register_stream_remove(tmp_path: Any) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with simulator(tmp_path, kiwoom_registration_limit=3) as sim:
            async with logged_in(sim) as ws:
                dec = KiwoomDecoder("kiwoom-1")
                await ws.send_message(reg_message("1", ["005930", "000660_NX"], ["0B"]))
                assert await next_control(ws, dec) == RegReply(
                    "REG", True, 0, "정상적으로 처리되었습니다"
                )
                ticks: list[Tick] = []
                while len({(t.code, t.venue) for t in ticks}) < 2:
                    out = dec.decode(await ws.get_message(), 0)
                    if isinstance(out, Ping):
                        await ws.send_message(out.raw)
                    elif isinstance(out, list):
                        ticks += [t for t in out if isinstance(t, Tick)]
                assert {(t.code, t.venue) for t in ticks} == {("005930", "KRX"), ("000660", "NXT")}
                assert all(t.price > 0 and t.volume > 0 for t in ticks)
                # over the limit (3): refused whole, nothing of it registered
                await ws.send_message(reg_message("2", ["035420", "005380"], ["0B"]))
                refused = await next_control(ws, dec)
                assert refused == RegReply("REG", False, 1, "등록 종목수 초과")
                # refresh "0" replaces group 1: one item left
                await ws.send_message(reg_message("1", ["035420"], ["0D"], refresh="0"))
                assert (await next_control(ws, dec)).ok
                conn = next(c for c in sim.control.conns.values() if c.protocol == "kiwoom")
                assert conn.subs == {("0D", "035420")}
                await ws.send_message(remove_message("1", ["035420"], ["0D"]))
                assert await next_control(ws, dec) == RegReply(
                    "REMOVE", True, 0, "정상적으로 처리되었습니다"
                )
                assert conn.subs == set()
                await ws.send_message(reg_message("1", ["999999"], ["0B"]))  # not listed
                assert not (await next_control(ws, dec)).ok


async def test_refusals_and_system_messages(tmp_path: Any) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with simulator(tmp_path, max_missed_pings=2) as sim:
            dec = KiwoomDecoder("t")
            # a bad token: refused in the documented form
            async with open_upstream(sim.kiwoom_ws_url, 5) as ws:
                await ws.send_message(login_message("not-a-token"))
                reply = await next_control(ws, dec)
                assert isinstance(reply, Login) and not reply.ok and "CODE=8005" in reply.message
            # no LOGIN first: R10004, then the server closes
            async with open_upstream(sim.kiwoom_ws_url, 5) as ws:
                await ws.send_message(reg_message("1", ["005930"], ["0B"]))
                assert (await next_control(ws, dec)).code == "R10004"
                with trio.fail_after(5):
                    try:
                        await ws.get_message()
                        raise AssertionError("the connection stayed open")
                    except ConnectionClosed:
                        pass
            # a second login with the same app key: R10001 to the first
            async with logged_in(sim, "same") as first, logged_in(sim, "same") as second:
                assert await next_control(first, dec) == System(
                    "R10001", "동일한 App Key로 다른 접속이 발생하여 접속을 종료합니다"
                )
                # PINGs unanswered: R10002 and the end
                found = await next_control(second, dec, echo=False)
                assert isinstance(found, System) and found.code == "R10002"
            # refused credentials: the token call says so (HTTP 200, return_code)
            sim.control.reject_credentials = True
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                body = (await http.post("/oauth2/token", json=token_request("k", "s"))).json()
            assert body["return_code"] == 8001


async def test_one_broker_down_while_the_other_streams(tmp_path: Any) -> None:
    """Kiwoom's outage refuses its token calls and handshakes; a KIS client goes on, and the
    two brokers report the same trades (one market)."""
    with trio.fail_after(TIMEOUT_S):
        async with simulator(tmp_path) as sim:
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                approval = await request_approval_key(http, "kis-key", "secret")
            async with logged_in(sim) as kiwoom:
                await kiwoom.send_message(reg_message("1", ["005930"], ["0B"]))
                async with open_upstream(sim.ws_url, 5) as kis:
                    await kis.send_message(subscribe_message(approval, "H0STCNT0", "005930"))
                    kis_dec, kw_dec = KisDecoder("kis-1"), KiwoomDecoder("kiwoom-1")
                    kis_keys: set[Any] = set()
                    kw_keys: set[Any] = set()

                    async def read_kis() -> None:
                        while True:
                            out = kis_dec.decode(await kis.get_message(), time.time_ns())
                            if isinstance(out, PingPong):
                                await kis.send_message(out.raw)
                            elif isinstance(out, list):
                                kis_keys.update(t.key for t in out if isinstance(t, Tick))

                    async def read_kiwoom() -> None:
                        while True:
                            out = kw_dec.decode(await kiwoom.get_message(), time.time_ns())
                            if isinstance(out, Ping):
                                await kiwoom.send_message(out.raw)
                            elif isinstance(out, list):
                                kw_keys.update(t.key for t in out if isinstance(t, Tick))

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(read_kis)
                        nursery.start_soon(read_kiwoom)
                        while len(kis_keys & kw_keys) < 5:  # noqa: ASYNC110 -- readers above
                            await trio.sleep(0.02)
                        nursery.cancel_scope.cancel()
                    sim.control.go_down(30.0, broker="kiwoom")
                    with trio.fail_after(5):
                        try:
                            while True:
                                await kiwoom.get_message()
                        except ConnectionClosed:
                            pass
                    async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                        refused = await http.post("/oauth2/token", json=token_request("k", "s"))
                        assert refused.status_code == 503
                        ls_form = await http.post(
                            "/oauth2/token",
                            data={"grant_type": "client_credentials", "appkey": "a",
                                  "appsecretkey": "b"},
                        )  # fmt: skip
                        assert ls_form.status_code == 200  # LS is up
                    before = len(kis_keys)
                    while len(kis_keys) < before + 5:
                        out = kis_dec.decode(await kis.get_message(), time.time_ns())
                        if isinstance(out, PingPong):
                            await kis.send_message(out.raw)
                        elif isinstance(out, list):
                            kis_keys.update(t.key for t in out if isinstance(t, Tick))


def test_sim_settings_keep_the_kis_limit_apart() -> None:
    s = make_settings(__import__("pathlib").Path("/tmp"))
    assert (
        replace(s.sim, kiwoom_registration_limit=5).registration_limit == s.sim.registration_limit
    )
    assert msgspec.json.decode(login_message("x")) == {"trnm": "LOGIN", "token": "x"}
