"""A Redis restart under the roles (a Redis of the test's own, so the shared one is left
alone): the ingest keeps storing throughout, the gateway reconnects with backoff, and a client
that kept its socket to the gateway gets prices again once Redis is back, and every lossless
message published while Redis was away, once each and in order."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from tests.e2e.test_cli import kill_if_running, start_run
from tests.e2e.test_client import post_signal
from tests.e2e.test_gateway import recv_type
from tests.e2e.test_procfile import free_ports
from tests.e2e.test_service import open_websocket_url, recv, send
from tradestream.gateway.auth import Authenticator

SECRET = "restart-test-secret-restart-test-xxxx"


async def redis_server(port: int) -> trio.Process:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (the machine's Redis is)")
    proc = await trio.lowlevel.open_process(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with trio.fail_after(10):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
                return proc
            except OSError:
                await trio.sleep(0.05)


async def test_roles_ride_out_a_redis_restart(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    db = tmp_path / "ingest.db"
    env = {
        **os.environ,
        "TRADESTREAM_REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "TRADESTREAM_REDIS_STREAM": f"ts-test:{uuid.uuid4().hex[:12]}:stream",
        "TRADESTREAM_JWT_SECRET": SECRET,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{db}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
    }
    engine = sa.create_engine(f"sqlite:///{db}")

    def stored() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.text("SELECT count(*) FROM stock_prices_realtime")).scalar_one()
            )

    redis = await redis_server(port)
    procs: list[trio.Process] = [redis]
    try:
        with trio.fail_after(60):
            ingest, ingest_url = await start_run({**env, "TRADESTREAM_ROLE": "ingest"}, tmp_path)
            procs.append(ingest)
            gateway, gateway_url = await start_run(
                {**env, "TRADESTREAM_ROLE": "gateway"},
                tmp_path,
                rb"tradestream gateway is up: (http://\S+)",
            )
            procs.append(gateway)
            url = gateway_url.replace("http://", "ws://") + "/api/ws?token="
            async with open_websocket_url(url + Authenticator(SECRET).issue("u")) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="price:005930")
                await recv_type(ws, "subscribed")
                await send(ws, type="subscribe", topic="signal:vcp")
                await recv_type(ws, "subscribed")
                before = await recv_type(ws, "price_update")
                redis.kill()  # Redis gone
                await redis.wait()
                rows = stored()
                producer = Authenticator(SECRET).issue("bot", role="producer")
                for n in range(1, 6):  # lossless messages while Redis is away
                    await post_signal(ingest_url, producer, n)
                while stored() < rows + 100:  # noqa: ASYNC110  (another process's store)
                    await trio.sleep(0.1)  # the ingest stores on without Redis
                redis = await redis_server(port)  # back, empty (no persistence)
                procs[0] = redis
                missed: list[dict[str, Any]] = []  # the same socket, fed again
                after: dict[str, Any] = {}
                while len(missed) < 5 or not after:
                    m = await recv(ws)
                    if m["type"] == "price_update":
                        after = m
                    elif m["type"] == "signal_update":
                        missed.append(m)
            assert ingest.returncode is None and gateway.returncode is None
    finally:
        for proc in reversed(procs):
            await kill_if_running(proc)
        engine.dispose()
    assert after["symbol"] == before["symbol"] == "005930"
    assert after["data"]["volume"] > before["data"]["volume"]
    assert [m["data"]["signals"][0]["n"] for m in missed] == [1, 2, 3, 4, 5]
    offsets = [m["offset"] for m in missed]
    assert offsets == sorted(set(offsets)) and len({m["epoch"] for m in missed}) == 1
