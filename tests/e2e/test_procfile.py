"""The Procfile as an operator runs it (`just cluster`, honcho): one ingest and two gateways
over the real Redis; a client of either gateway gets the ingest's prices; SIGTERM stops all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import trio

from tests.e2e.test_cli import REPO, read_until
from tests.e2e.test_gateway import recv_type
from tests.e2e.test_roles_redis import drop_keys
from tests.e2e.test_service import open_websocket_url, recv, send
from tradestream.gateway.auth import Authenticator

SECRET = "procfile-test-secret-procfile-test-x"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


async def test_one_ingest_and_two_gateways_from_the_procfile(
    tmp_path: Path, redis_url: str
) -> None:
    ingest_port, g1, g2 = free_ports(3)
    stream = f"ts-test:{uuid.uuid4().hex[:12]}:stream"
    env = {
        **os.environ,
        "TRADESTREAM_JWT_SECRET": SECRET,
        "TRADESTREAM_REDIS_URL": redis_url,
        "TRADESTREAM_REDIS_STREAM": stream,
        "TRADESTREAM_HOST": "127.0.0.1",
        "INGEST_PORT": str(ingest_port),
        "GATEWAY1_PORT": str(g1),
        "GATEWAY2_PORT": str(g2),
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{tmp_path / 'cluster.db'}",
        "TRADESTREAM_SPOOL_DIR": str(tmp_path / "spool"),
    }
    honcho = Path(sys.executable).parent / "honcho"
    proc = await trio.lowlevel.open_process(
        [str(honcho), "start", "-f", str(REPO / "Procfile"), "-d", str(REPO)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    out = bytearray()
    token = Authenticator(SECRET).issue("u")
    got: dict[int, dict[str, object]] = {}
    try:
        with trio.fail_after(60):
            assert proc.stdout is not None
            # both gateways' banners, and the ingest's
            await read_until(proc.stdout, out, rb"gateway is up(?s:.*)gateway is up")
            await read_until(proc.stdout, out, rb"tradestream is up")
            for port in (g1, g2):
                url = f"ws://127.0.0.1:{port}/api/ws?token={token}"
                async with open_websocket_url(url) as ws:
                    await recv(ws)
                    await send(ws, type="subscribe", topic="price:005930")
                    await recv_type(ws, "subscribed")
                    got[port] = await recv_type(ws, "price_update")
            async with httpx.AsyncClient() as http:
                ingest_up = (await http.get(f"http://127.0.0.1:{ingest_port}/health")).status_code
            os.killpg(proc.pid, signal.SIGTERM)
            await proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await drop_keys(redis_url, stream)
    assert {p: m["symbol"] for p, m in got.items()} == {g1: "005930", g2: "005930"}
    assert ingest_up == 200
    text = out.decode(errors="replace")
    assert "Traceback" not in text, text[-3000:]
