"""One live ingest per stream, with real processes and the real Redis: a standby ingest takes
the lease over within 5 s of the leader's freezing (SIGSTOP) and another within 5 s of that
one's death (kill -9), each announcing the downtime as a feed gap to the gateways' clients;
the first leader, thawed, can neither publish to the stream nor store: it stops with a
one-line error, and what the database refused it keeps in its spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import coredis
import trio

from tests.e2e.test_cli import kill_if_running, read_until, start_run
from tests.e2e.test_gateway import recv_type
from tests.e2e.test_roles_redis import drop_keys
from tests.e2e.test_service import open_websocket_url, recv, send
from tradestream.gateway.auth import Authenticator
from tradestream.store.fence import current_token
from tradestream.store.writer import make_engine

SECRET = "lease-test-secret-lease-test-secret-x"


async def test_a_standby_takes_over_and_the_old_leader_is_fenced(
    tmp_path: Path, redis_url: str
) -> None:
    stream = f"ts-test:{uuid.uuid4().hex[:12]}:stream"
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {
        **os.environ,
        "TRADESTREAM_REDIS_URL": redis_url,
        "TRADESTREAM_REDIS_STREAM": stream,
        "TRADESTREAM_JWT_SECRET": SECRET,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": db,
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
        "TRADESTREAM_ROLE": "ingest",
    }
    (tmp_path / "b").mkdir()
    procs: list[trio.Process] = []
    a_err = tmp_path / "a.err"
    try:
        with trio.fail_after(90):
            a = await ingest(env, tmp_path, "a")
            procs.append(a)
            assert a.stdout is not None
            await read_until(a.stdout, bytearray(), rb"tradestream is up: ")
            b_up: dict[str, Any] = {}

            async def start_b() -> None:
                b, _ = await start_run(env, tmp_path / "b")
                procs.append(b)
                b_up["at"], b_up["proc"] = time.monotonic(), b

            gw, gw_url = await start_run(
                {**env, "TRADESTREAM_ROLE": "gateway"}, tmp_path, rb"gateway is up: (\S+)"
            )
            procs.append(gw)
            url = gw_url.replace("http://", "ws://") + "/api/ws?token="
            async with open_websocket_url(url + Authenticator(SECRET).issue("u")) as ws:
                await recv(ws)
                await send(ws, type="subscribe", topic="price:005930")
                await recv_type(ws, "subscribed")
                await recv_type(ws, "price_update")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(start_b)  # stands by: the lease is A's
                    await trio.sleep(1.0)  # noqa: ASYNC110 (B is polling; nothing to wait on)
                    assert "at" not in b_up
                    a.send_signal(signal.SIGSTOP)  # the leader freezes (a pause, a partition)
                    frozen = time.monotonic()
                    gap = await recv_type(ws, "feed_gap")
                    took_over_s = b_up["at"] - frozen
                    # a second standby, C; then B dies outright (kill -9): C takes over
                    c = await ingest(env, tmp_path, "c")
                    c_err = tmp_path / "c.err"
                    procs.append(c)
                    assert c.stdout is not None
                    while b"waiting for the lease" not in c_err.read_bytes():  # noqa: ASYNC110
                        await trio.sleep(0.05)  # another process's log
                    b_up["proc"].kill()
                    killed = time.monotonic()
                    await read_until(c.stdout, bytearray(), rb"tradestream is up: ")
                    c_took_over_s = time.monotonic() - killed
                    second_gap = await recv_type(ws, "feed_gap")
            engine = make_engine(db)
            token_c = current_token(engine, f"ingest:{stream}")
            a.send_signal(signal.SIGCONT)  # back: it must find out and stop
            await a.wait()
            async with coredis.Redis.from_url(redis_url) as r:
                entries = await r.xrange(stream)
            d = await ingest(env, tmp_path, "d")  # a standby is stopped as any process: SIGTERM
            procs.append(d)
            while b"waiting for the lease" not in (tmp_path / "d.err").read_bytes():  # noqa: ASYNC110
                await trio.sleep(0.05)  # another process's log
            d.terminate()
            t0 = time.monotonic()
            await d.wait()
            stopped_standby_s = time.monotonic() - t0
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in procs:
            with trio.move_on_after(20):
                await proc.wait()
            await kill_if_running(proc)
        await drop_keys(redis_url, stream)
    assert took_over_s < 5.0, took_over_s
    assert c_took_over_s < 5.0, c_took_over_s
    assert "takeover" in gap["reason"] and "takeover" in second_gap["reason"]
    assert token_c == 3
    assert a.returncode == 1
    assert "token 1 is stale" in a_err.read_text()
    assert list((tmp_path / "a" / "spool").glob("*.spool"))  # refused rows kept, not lost
    assert d.returncode == 0 and stopped_standby_s < 5.0
    epochs = [e.field_values[b"e"] for e in entries]
    runs = [e for i, e in enumerate(epochs) if i == 0 or e != epochs[i - 1]]
    assert len(runs) == 3 == len(set(runs))  # A, then B, then C: nothing of A's after B


async def ingest(env: dict[str, str], tmp_path: Path, name: str) -> trio.Process:
    """`tradestream run` in `tmp_path/name` (its own spool), its log in `tmp_path/name.err`,
    its stdout (the banner) a pipe."""
    (tmp_path / name).mkdir()
    with (tmp_path / f"{name}.err").open("wb") as err:
        return await trio.lowlevel.open_process(
            [sys.executable, "-m", "tradestream", "run"],
            env=env,
            cwd=tmp_path / name,
            stdout=subprocess.PIPE,
            stderr=err,
        )
