"""`tradestream run` as a user runs it: a real process, a real SIGINT, exit status 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import sqlalchemy as sa
import trio

from tradestream.feeds.transport import open_upstream


async def read_until(
    stream: trio.abc.ReceiveStream, buf: bytearray, pattern: bytes
) -> re.Match[bytes]:
    while (m := re.search(pattern, bytes(buf))) is None:
        chunk = await stream.receive_some()
        assert chunk, f"process output ended before {pattern!r}:\n{buf.decode()}"
        buf += chunk
    return m


async def test_run_then_sigint_stores_every_tick_and_exits_0(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    env = {
        **os.environ,
        "TRADESTREAM_PORT": "0",
        "TRADESTREAM_DATABASE_URL": f"sqlite:///{db}",
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
        "TRADESTREAM_SIM_TICK_RATE": "500",
    }
    env.pop("TRADESTREAM_JWT_SECRET", None)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tradestream", "run"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = bytearray(), bytearray()
    try:
        with trio.fail_after(30):
            assert proc.stdout is not None and proc.stderr is not None
            m = await read_until(
                proc.stdout, out, rb"tradestream watch '(ws://[^']+)' price:005930"
            )
            url = m.group(1).decode()
            async with open_upstream(url, connect_timeout_s=5) as ws:
                assert msgspec.json.decode(await ws.get_message())["type"] == "connected"
                await ws.send_message('{"type":"subscribe","topic":"price:005930"}')
                assert msgspec.json.decode(await ws.get_message())["type"] == "subscribed"
                msg = msgspec.json.decode(await ws.get_message())
                assert msg["type"] == "price_update"
                proc.send_signal(signal.SIGINT)
                code = await proc.wait()
            m = await read_until(
                proc.stderr, err, rb"pipeline drained: (\d+) events received, (\d+) stored"
            )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, err.decode()
    received, stored = int(m.group(1)), int(m.group(2))
    assert received > 0 and stored == received
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = sum(
            conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in (
                "stock_prices_realtime",
                "orderbook_snapshots",
                "program_trades",
                "executions",
                "news",
                "feed_gaps",
                "index_ticks",
                "alerts",
                "signals",
                "slot_audit",
            )
        )
    engine.dispose()
    assert rows == received


async def test_sim_command_serves_and_stops(tmp_path: Path) -> None:
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tradestream", "sim"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = bytearray()
    try:
        with trio.fail_after(30):
            assert proc.stdout is not None
            m = await read_until(proc.stdout, out, rb"KIS (ws://\S+)")
            async with open_upstream(m.group(1).decode(), connect_timeout_s=5) as ws:
                await ws.send_message("not json")
                reply = msgspec.json.decode(await ws.get_message())
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert reply["body"]["msg_cd"] == "OPSP9999"
    assert code == 0


def test_bench_list_names_every_scenario() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tradestream.bench", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    names = [line.split()[0] for line in done.stdout.splitlines()]
    for name in ("store", "reconnect", "fanout", "overload", "ingest", "floor", "alerts"):
        assert name in names, done.stdout
    assert all(len(line.split()) > 1 for line in done.stdout.splitlines())  # each described
