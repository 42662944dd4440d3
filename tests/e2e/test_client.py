"""tradestream.client against the real service: typed messages, requests, `?batch=1` frames,
reconnect with recovery, a server restart, and the same library under asyncio."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import make_settings
from tests.e2e.test_cli import kill_if_running, start_run
from tests.e2e.test_gateway import tok
from tests.e2e.test_procfile import free_ports
from tests.e2e.test_service import TIMEOUT_S, service
from tradestream import wire
from tradestream.client import Client, ConnectionRefused
from tradestream.gateway.auth import Authenticator
from tradestream.session_calendar import Phase
from tradestream.wire import CLOSE_HEARTBEAT

SECRET = "client-test-secret-client-test-secret"


async def next_of(client: Client, kind: type, **match: Any) -> Any:
    """The next message of type `kind` (with the given attribute values), skipping others."""
    async for msg in client:
        if isinstance(msg, kind) and all(getattr(msg, k) == v for k, v in match.items()):
            return msg
    raise AssertionError("the client ended")


async def post_signal(base_url: str, token: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.post(
            "/api/signals/vcp",
            json={"signals": [{"symbol": "005930", "n": n}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert r.status_code == 200, r.text


async def test_typed_messages_requests_and_batch_frames(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(make_settings(tmp_path)) as running:
            producer = tok(running, "bot", role="producer")
            for batch in (False, True):
                async with Client(running.ws_url, tok(running, "alice"), batch=batch) as c:
                    await c.subscribe("price:005930", "signal:vcp", "market:session")
                    sub = await next_of(c, wire.Subscribed, topic="signal:vcp")
                    session = await next_of(c, wire.MarketSession)  # the current phase
                    price = await next_of(c, wire.PriceUpdate)
                    await post_signal(running.url, producer, 1)
                    sig = await next_of(c, wire.SignalUpdate)
                    quote = await c.get_price("005930")
                    account = await c.get_account()
                    try:
                        await c.get_price("999999")
                        refused = ""
                    except Exception as exc:  # noqa: BLE001  (its type and code are asserted)
                        refused = f"{type(exc).__name__}:{getattr(exc, 'code', '')}"
                assert sub.epoch and sub.recovered is None
                assert session.data["krx"] in {p.value for p in Phase}
                assert session.data["next_change"] > session.data["at"]
                assert price.symbol == "005930" and price.data.price > 0
                assert sig.data.signals[0]["n"] == 1 and sig.offset > sub.offset - 1
                assert sig.epoch == sub.epoch
                assert isinstance(quote, wire.Price) and quote.symbol == "005930"
                assert quote.source == "memory" and quote.data.price > 0
                assert isinstance(account, wire.Account) and "accounts" in account.data
                assert refused == "RequestFailed:no_data"
                assert c.stats.connects == 1 and c.stats.reconnects == 0


async def test_a_dropped_connection_comes_back_and_recovers(tmp_path: Path) -> None:
    """The server closes the client's socket (as for a missed heartbeat); the client
    reconnects, subscribes again with `since`, and gets every signal exactly once, in order."""
    with trio.fail_after(TIMEOUT_S):
        async with service(make_settings(tmp_path)) as running:
            producer = tok(running, "bot", role="producer")
            async with Client(running.ws_url, tok(running, "alice"), backoff_initial_s=0.5) as c:
                await c.subscribe("signal:vcp", "price:005930")
                await next_of(c, wire.Subscribed, topic="signal:vcp")
                await post_signal(running.url, producer, 1)
                got = [(await next_of(c, wire.SignalUpdate)).data.signals[0]["n"]]
                for client in running.hub.clients.values():
                    client.outbox.close(CLOSE_HEARTBEAT, "test: dropped")
                for n in (2, 3):
                    await post_signal(running.url, producer, n)
                back = await next_of(c, wire.Subscribed, topic="signal:vcp")
                while len(got) < 3:
                    got.append((await next_of(c, wire.SignalUpdate)).data.signals[0]["n"])
                await post_signal(running.url, producer, 4)
                got.append((await next_of(c, wire.SignalUpdate)).data.signals[0]["n"])
                await next_of(c, wire.PriceUpdate)  # prices resubscribed too
    assert got == [1, 2, 3, 4]
    assert back.recovered is True
    assert c.stats.reconnects == 1 and c.stats.recovered == 1 and c.stats.not_recovered == 0


async def test_a_server_restart(tmp_path: Path) -> None:
    """The service stops and starts again on the same port: the client says it is away, comes
    back by itself, and the new process's epoch is reported as not recovered."""
    (port,) = free_ports(1)
    env = service_env(tmp_path, port)
    token = Authenticator(SECRET).issue("alice")
    url = f"ws://127.0.0.1:{port}/api/ws"
    procs: list[trio.Process] = []
    try:
        with trio.fail_after(90):
            first, _ = await start_run(env, tmp_path)
            procs.append(first)
            async with Client(url, token, backoff_initial_s=0.1, backoff_cap_s=0.5) as c:
                await c.subscribe("price:005930", "signal:vcp")
                await next_of(c, wire.PriceUpdate)
                first.send_signal(signal.SIGTERM)
                await first.wait()
                away = c.connected
                second, _ = await start_run(env, tmp_path)
                procs.append(second)
                back = await next_of(c, wire.Subscribed, topic="signal:vcp")
                after = await next_of(c, wire.PriceUpdate)
    finally:
        for proc in procs:
            await kill_if_running(proc)
    assert away is False
    assert back.recovered is False  # another process: what it missed cannot be vouched for
    assert after.symbol == "005930"
    assert c.stats.reconnects == 1 and c.stats.not_recovered == 1


async def test_a_refused_token_is_not_retried(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with service(make_settings(tmp_path)) as running:
            bad = Authenticator("another-secret-another-secret-another").issue("mallory")
            try:
                async with Client(running.ws_url, bad) as c:
                    async for _ in c:
                        pass
                outcome = "ended"
            except* ConnectionRefused as group:
                outcome = str(group.exceptions[0])
    assert "refused" in outcome and ("401" in outcome or "4401" in outcome)


def test_the_same_library_under_asyncio(tmp_path: Path) -> None:
    """An asyncio program: no Trio anywhere in it."""
    import subprocess
    import time

    (port,) = free_ports(1)
    env = service_env(tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tradestream", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while b"tradestream is up" not in proc.stdout.readline():
            assert time.monotonic() < deadline and proc.poll() is None

        async def program() -> tuple[Any, Any]:
            token = Authenticator(SECRET).issue("alice")
            async with Client(f"ws://127.0.0.1:{port}/api/ws", token) as c:
                await c.subscribe("price:005930")
                async for msg in c:
                    if isinstance(msg, wire.PriceUpdate):
                        return msg, await c.get_price("005930")
            raise AssertionError("ended")

        update, quote = asyncio.run(asyncio.wait_for(program(), 30))
    finally:
        proc.terminate()
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()
    assert update.symbol == "005930" and quote.symbol == "005930"


def service_env(tmp_path: Path, port: int) -> dict[str, str]:
    """`tradestream run` on `port` with this file's secret and a database in `tmp_path`."""
    return {
        **os.environ,
        "TRADESTREAM_PORT": str(port),
        "TRADESTREAM_JWT_SECRET": SECRET,
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 'client.db'}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
    }
