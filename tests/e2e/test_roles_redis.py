"""The ingest and gateway roles as separate processes over the real Redis: a client of the
gateway gets the ingest's prices (a snapshot at once, then updates) and its lossless messages
with their offsets, and the ingest keeps serving its own clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coredis
import httpx
import trio

from tests.e2e.test_cli import kill_if_running, start_run
from tests.e2e.test_gateway import recv_type
from tests.e2e.test_service import open_websocket_url, recv, send
from tradestream.gateway.auth import Authenticator

SECRET = "roles-test-secret-roles-test-secret-x"


async def test_a_gateway_process_serves_what_the_ingest_process_takes_in(
    tmp_path: Path, redis_url: str
) -> None:
    stream, env = cluster_env(tmp_path, redis_url)
    auth = Authenticator(SECRET)
    with trio.fail_after(60):
        ingest, ingest_url = await start_run({**env, "TRADESTREAM_ROLE": "ingest"}, tmp_path)
        gateway, gateway_url = await start_run(
            {**env, "TRADESTREAM_ROLE": "gateway"},
            tmp_path,
            rb"tradestream gateway is up: (http://\S+)",
        )
        try:
            ws_url = gateway_url.replace("http://", "ws://") + "/api/ws?token=" + auth.issue("u")
            async with open_websocket_url(ws_url) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="price:005930")
                await recv_type(ws, "subscribed")
                first = await recv_type(ws, "price_update")
                second = await recv_type(ws, "price_update")
                await send(ws, type="subscribe", topic="signal:vcp")
                await recv_type(ws, "subscribed")
                producer = {"Authorization": f"Bearer {auth.issue('bot', role='producer')}"}
                async with httpx.AsyncClient(base_url=ingest_url, headers=producer) as http:
                    r = await http.post(
                        "/api/signals/vcp", json={"signals": [{"symbol": "005930", "n": 1}]}
                    )
                    assert r.status_code == 200, r.text
                signal = await recv_type(ws, "signal_update")
            async with httpx.AsyncClient(base_url=gateway_url) as http:
                status = (
                    await http.get(
                        "/api/ws/status", params={"token": auth.issue("ops", role="admin")}
                    )
                ).json()
        finally:
            await stop_all([ingest, gateway])
            await drop_keys(redis_url, stream)
    assert first["symbol"] == second["symbol"] == "005930"
    assert second["data"]["volume"] >= first["data"]["volume"]
    assert signal["data"]["signals"][0]["n"] == 1 and signal["offset"] >= 1 and signal["epoch"]
    assert status["role"] == "gateway" and status["redis"]["received"] >= 3
    assert status["redis"]["connects"] == 1
    assert gateway.returncode == 0 and ingest.returncode == 0


async def test_a_client_of_a_killed_gateway_recovers_on_another(
    tmp_path: Path, redis_url: str
) -> None:
    """Gateway A is killed (-9) under its client; the client comes back on gateway B with the
    offset it saw and gets exactly the lossless messages it missed, then live ones. A gateway
    started only afterwards (C) has the same history and the latest prices, from the stream."""
    stream, env = cluster_env(tmp_path, redis_url)
    auth = Authenticator(SECRET)
    token = auth.issue("u")
    producer = {"Authorization": f"Bearer {auth.issue('bot', role='producer')}"}
    procs: list[trio.Process] = []

    async def gateway() -> tuple[trio.Process, str]:
        proc, url = await start_run(
            {**env, "TRADESTREAM_ROLE": "gateway"}, tmp_path, rb"tradestream gateway is up: (\S+)"
        )
        procs.append(proc)
        return proc, url.replace("http://", "ws://") + "/api/ws?token=" + token

    async def subscribe(ws: Any, **since: Any) -> dict[str, Any]:
        await recv(ws)
        await send(ws, type="subscribe", topic="signal:vcp", **since)
        return await recv_type(ws, "subscribed")

    async def n_of(ws: Any) -> tuple[int, int, str]:
        m = await recv_type(ws, "signal_update")
        return m["data"]["signals"][0]["n"], m["offset"], m["epoch"]

    try:
        with trio.fail_after(90):
            ingest, ingest_url = await start_run({**env, "TRADESTREAM_ROLE": "ingest"}, tmp_path)
            procs.append(ingest)
            (a, a_url), (_, b_url) = await gateway(), await gateway()
            async with httpx.AsyncClient(base_url=ingest_url, headers=producer) as http:

                async def post(n: int) -> None:
                    r = await http.post(
                        "/api/signals/vcp", json={"signals": [{"symbol": "005930", "n": n}]}
                    )
                    assert r.status_code == 200, r.text

                async with open_websocket_url(a_url) as ws:
                    await subscribe(ws)
                    await post(1)
                    first = await n_of(ws)
                    a.kill()  # under its client
                    await a.wait()
                for n in (2, 3):
                    await post(n)
                async with open_websocket_url(b_url) as ws:
                    since = {"offset": first[1], "epoch": first[2]}
                    back = await subscribe(ws, since=since)
                    replayed = [await n_of(ws), await n_of(ws)]
                    await post(4)
                    live = await n_of(ws)
                _, c_url = await gateway()
                async with open_websocket_url(c_url) as ws:
                    late = await subscribe(ws, since=since)
                    late_replayed = [(await n_of(ws))[0] for _ in range(3)]
                    await send(ws, type="subscribe", topic="price:005930")
                    await recv_type(ws, "subscribed", skip=())
                    snapshot = await recv(ws)  # the latest price, before any new trade
                async with open_websocket_url(c_url) as ws:
                    stale = await subscribe(ws, since={"offset": 0, "epoch": "another"})
    finally:
        await stop_all(procs)
        await drop_keys(redis_url, stream)
    assert first[0] == 1
    assert back["recovered"] is True and back["epoch"] == first[2]
    assert [n for n, _, _ in replayed] == [2, 3] and live[0] == 4
    assert [o for _, o, _ in replayed] == sorted({o for _, o, _ in replayed})
    assert late["recovered"] is True and late_replayed == [2, 3, 4]
    assert snapshot["type"] == "price_update" and snapshot["symbol"] == "005930"
    assert stale["recovered"] is False


async def test_client_demand_on_any_gateway_reaches_the_ingests_slots(
    tmp_path: Path, redis_url: str
) -> None:
    """A price nobody else asks for, subscribed on a gateway, gets an upstream slot on the
    ingest and streams; the per-user demand limit holds across gateways (the refusal ends the
    subscription with the error); a released subscription and a killed gateway's claims free
    their slots."""
    stream, env = cluster_env(tmp_path, redis_url)
    env |= {
        "TRADESTREAM_WATCHLIST": "005930",
        "TRADESTREAM_SCANNER_SLOTS": "0",
        "TRADESTREAM_WS_MAX_DEMAND_PER_USER": "1",
    }
    auth = Authenticator(SECRET)
    procs: list[trio.Process] = []

    async def gateway() -> tuple[trio.Process, str]:
        proc, url = await start_run(
            {**env, "TRADESTREAM_ROLE": "gateway"}, tmp_path, rb"tradestream gateway is up: (\S+)"
        )
        procs.append(proc)
        return proc, url.replace("http://", "ws://") + "/api/ws?token="

    try:
        with trio.fail_after(90):
            ingest, ingest_url = await start_run({**env, "TRADESTREAM_ROLE": "ingest"}, tmp_path)
            procs.append(ingest)
            (g1, g1_url), (_, g2_url) = await gateway(), await gateway()
            async with httpx.AsyncClient(base_url=ingest_url) as http:

                async def demanded() -> set[str]:
                    r = await http.get(
                        "/api/slots", params={"token": auth.issue("o", role="admin")}
                    )
                    assert r.status_code == 200, r.text
                    return {s["code"] for s in r.json()["slots"] if "demand" in s["claims"]}

                async def until(check: Callable[[set[str]], bool]) -> set[str]:
                    while not check(codes := await demanded()):  # noqa: ASYNC110
                        await trio.sleep(0.1)  # another process's state
                    return codes

                async def price_of(ws: Any, code: str) -> dict[str, Any]:
                    while (m := await recv_type(ws, "price_update"))["symbol"] != code:
                        pass
                    return m

                async with open_websocket_url(g1_url + auth.issue("u")) as ws1:
                    await recv(ws1)
                    await send(ws1, type="subscribe", topic="price:035420")
                    await recv_type(ws1, "subscribed")
                    streamed = await price_of(ws1, "035420")  # only its demand streams it
                    assert "035420" in await demanded()
                    async with open_websocket_url(g2_url + auth.issue("u")) as ws2:
                        await recv(ws2)
                        await send(ws2, type="subscribe", topic="price:000270")
                        await recv_type(ws2, "subscribed")
                        refused = await recv_type(ws2, "error")
                        await send(ws2, type="subscribe", topic="price:000270")
                        again = await recv_type(ws2, "subscribed")  # a fresh subscribe, refused
                        refused_again = await recv_type(ws2, "error")
                    async with open_websocket_url(g2_url + auth.issue("v")) as ws3:
                        await recv(ws3)
                        await send(ws3, type="subscribe", topic="price:005380")
                        await recv_type(ws3, "subscribed")
                        await price_of(ws3, "005380")
                    released = await until(lambda c: "005380" not in c)  # ws3 is gone
                    status = (
                        await http.get(
                            "/api/ws/status", params={"token": auth.issue("o", role="admin")}
                        )
                    ).json()["cluster"]
                    g1.kill()  # under ws1: its claims go once its heartbeat expires
                    await g1.wait()
                    after_kill = await until(lambda c: "035420" not in c)
    finally:
        await stop_all(procs)
        await drop_keys(redis_url, stream)
    assert streamed["data"]["price"] > 0
    assert refused["code"] == "demand_limit" and refused["topic"] == "price:000270"
    assert again["topic"] == "price:000270" and refused_again["code"] == "demand_limit"
    assert "035420" in released and after_kill == set()
    assert status["role"] == "ingest" and status["lease"]["token"] >= 1
    assert status["stream_out"]["sent"] > 0 and status["stream_out"]["fenced"] == 0
    assert status["demand"]["claims"] >= 2 and status["demand"]["refused"] == 2
    assert status["demand"]["releases"] >= 1 and status["gateways_with_claims"] == 2


def cluster_env(tmp_path: Path, redis_url: str) -> tuple[str, dict[str, str]]:
    """A stream of the test's own, and the environment every role of its cluster shares."""
    stream = f"ts-test:{uuid.uuid4().hex[:12]}:stream"
    return stream, {
        **os.environ,
        "TRADESTREAM_REDIS_URL": redis_url,
        "TRADESTREAM_REDIS_STREAM": stream,
        "TRADESTREAM_JWT_SECRET": SECRET,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 'ingest.db'}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
    }


async def stop_all(procs: list[trio.Process]) -> None:
    """SIGTERM to all (last started first), then at most 20 s each, then SIGKILL."""
    for proc in reversed(procs):
        if proc.returncode is None:
            proc.terminate()
    for proc in reversed(procs):
        with trio.move_on_after(20):
            await proc.wait()
        await kill_if_running(proc)


async def drop_keys(redis_url: str, stream: str) -> None:
    """Every key of a test's cluster: the stream, the demand keys and the lease's (all named
    after the stream)."""
    async with coredis.Redis.from_url(redis_url) as r:
        keys = [k async for k in r.scan_iter(match=f"*{stream}*")]
        if keys:
            await r.delete(keys)
