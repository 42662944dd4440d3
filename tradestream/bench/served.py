"""Fan-out as a user sees it: the service as its own process, fed over a real WebSocket, with
its clients in other processes, beside the strong peer doing the same job in the same run.

Per server, one after the other, on the same offered load:
- the upstream (bench/upstream.py, its own process): H0STCNT0 trades in the KIS wire format at
  `rate` per second over 50 codes, one record per frame, the send instant in µs in ACML_VOL;
- the server: `tradestream run` (two KIS app keys, so the 50 codes are all registered; SQLite;
  one message per frame, or `?batch=1`), or the peer (bench/peer.py: asyncio `websockets`,
  `broadcast()`, executemany every 100 ms);
- `clients` clients x `topics_per_client` price topics in `client_procs` processes (the
  fan-out bench's clients), every code with the same number of subscribers.

Each report: trades sent upstream in the window, deliveries expected (trades x subscribers of
their code) and received, latency from upstream send to client receive (p50, p99, max), server
CPU (its process, /proc) per delivery, the server's peak RSS, the machine's idle share and, for
tradestream, its router's intake lag (upstream receive -> router, from the status endpoint).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from tradestream.bench.clients import (
    ClientProcess,
    assign,
    collect,
    machine_busy_s,
    open_window,
    pct,
    read_line,
    start_clients,
    stop,
    topic_lists,
    wait_ready,
)
from tradestream.bench.fanout import SECRET
from tradestream.bench.store import scratch
from tradestream.gateway.auth import Authenticator
from tradestream.sim.market import DEFAULT_TICKERS

MAX_LATENCY_SAMPLES = 400_000
KINDS = ("tradestream", "tradestream_batch", "peer")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (Linux /proc), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def service_env(
    http_port: str, ws_port: str, codes: list[str], port: int, db: str, tmp: Path
) -> dict[str, str]:
    """`tradestream run`'s environment against the bench upstream: two KIS app keys (so all
    50 codes are registered), the bench's JWT secret, `db`, a spool in `tmp`."""
    return {
        **os.environ,
        "TRADESTREAM_KIS_WS_URL": f"ws://127.0.0.1:{ws_port}",
        "TRADESTREAM_KIS_REST_URL": f"http://127.0.0.1:{http_port}",
        "TRADESTREAM_KIS_APP_KEY": "bench-key-1",
        "TRADESTREAM_KIS_APP_SECRET": "bench-secret-1",
        "TRADESTREAM_KIS_EXTRA_APP_KEYS": "bench-key-2:bench-secret-2",
        "TRADESTREAM_WATCHLIST": ",".join(codes),
        "TRADESTREAM_JWT_SECRET": SECRET,
        "TRADESTREAM_PORT": str(port),
        "TRADESTREAM_DATABASE_URL": db,
        "TRADESTREAM_DB_AUTO_UPGRADE": "1",
        "TRADESTREAM_SPOOL_DIR": str(tmp / "spool"),
        "TRADESTREAM_LOG_LEVEL": "WARNING",
    }


async def _wait_http(port: int, path: str = "/health", timeout_s: float = 30.0) -> None:
    with trio.fail_after(timeout_s):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.1)  # not listening yet: the process is still starting
                continue
            async with stream:
                await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
                data = await stream.receive_some(4096)
                if data.startswith(b"HTTP/1.1 200"):
                    return
            await trio.sleep(0.1)


async def _start(argv: list[str], **kw: Any) -> trio.Process:
    return await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kw
    )


async def _run_one(
    kind: str,
    tmp: Path,
    *,
    clients: int,
    topics_per_client: int,
    codes: list[str],
    rate: float,
    warmup_s: float,
    duration_s: float,
    client_procs: int,
    db: str,
    records: int,
) -> dict[str, Any]:
    assignment = assign(codes, clients, topics_per_client)
    per_code = clients * topics_per_client // len(codes)  # subscribers of every code
    stride = max(1, math.ceil(rate * duration_s * per_code / MAX_LATENCY_SAMPLES))
    py = sys.executable
    up = await _start([py, "-m", "tradestream.bench.upstream", str(rate), str(records)])
    procs: list[trio.Process] = [up]
    server: trio.Process | None = None
    cps: list[ClientProcess] = []
    bufs: dict[int, bytearray] = {id(up): bytearray()}
    admin = Authenticator(SECRET).issue("bench-admin", role="admin")

    async def status(port: int) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            doc: dict[str, Any] = (
                await http.get(f"http://127.0.0.1:{port}/api/ws/status", params={"token": admin})
            ).json()
            return doc

    try:
        assert up.stdout is not None
        _, http_port, ws_port = (await read_line(up.stdout, bufs[id(up)])).decode().split()
        port = _free_port()
        if kind == "peer":
            server = await _start(
                [py, "-m", "tradestream.bench.peer", f"ws://127.0.0.1:{ws_port}", str(port), db,
                 ",".join(codes)]
            )  # fmt: skip
            bufs[id(server)] = bytearray()
            assert server.stdout is not None
            with trio.fail_after(30):
                assert await read_line(server.stdout, bufs[id(server)]) == b"ready"
            urls = [f"ws://127.0.0.1:{port}/" for _ in range(clients)]
        else:
            env = service_env(http_port, ws_port, codes, port, db, tmp)
            server = await _start([py, "-m", "tradestream", "run"], env=env, cwd=tmp)
            await _wait_http(port)
            await trio.sleep(2.0)  # both sessions connect and register
            auth = Authenticator(SECRET)
            query = "&batch=1" if kind == "tradestream_batch" else ""
            urls = [
                f"ws://127.0.0.1:{port}/api/ws?token={auth.issue(f'bench-{i}')}{query}"
                for i in range(clients)
            ]
        assert server is not None
        procs.append(server)
        watcher = await _start([py, "-m", "tradestream.bench.rowwatch", db])
        procs.append(watcher)
        bufs[id(watcher)] = bytearray()
        assert watcher.stdout is not None
        with trio.fail_after(30):
            assert await read_line(watcher.stdout, bufs[id(watcher)]) == b"ready"
        if clients:
            cps = await start_clients(urls, topic_lists(assignment), client_procs, stride)
            await wait_ready(cps)
        start_ns, end_ns = await open_window(cps, warmup_s, duration_s, also=(up, watcher))
        await trio.sleep((start_ns - time.time_ns()) / 1e9)
        cpu0, busy0 = _proc_cpu_s(server.pid), machine_busy_s()
        conflated0 = (await status(port))["outboxes"]["conflated"] if kind != "peer" else 0
        await trio.sleep((end_ns - time.time_ns()) / 1e9)
        cpu1, busy1 = _proc_cpu_s(server.pid), machine_busy_s()
        rss = _peak_rss_mb(server.pid)
        intake_lag = conflated = None
        if kind != "peer":  # the router's own report: upstream receive -> router, last ~4 s
            doc = await status(port)
            intake_lag = doc["router"]["intake_lag_ms"]
            conflated = doc["outboxes"]["conflated"] - conflated0
        with trio.fail_after(30):
            sent = json.loads(await read_line(up.stdout, bufs[id(up)]))
        results = await collect(cps) if cps else []
        with trio.fail_after(120):
            stored = json.loads(await read_line(watcher.stdout, bufs[id(watcher)]))
    finally:
        await stop(cps)
        if server is not None and server.returncode is None:
            server.send_signal(signal.SIGINT)  # tradestream drains and stores what it took
            with trio.move_on_after(30):
                await server.wait()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
    cpu = cpu1 - cpu0
    delivered = sum(r["messages"] for r in results)
    expected = sent["ticks"] * per_code
    lat = sorted(x for r in results for x in r["latencies_us"])
    errors = [e for r in results for e in r["errors"]]
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {
        "trades_per_s": round(sent["ticks"] / duration_s),
        "trades_sent": sent["sent"],
        "rows_stored": stored["rows"],
        "stored_of_sent": round(stored["rows"] / sent["sent"], 4) if sent["sent"] else None,
        "row_visible_ms_p50": stored["visible_ms"]["p50"],
        "row_visible_ms_p99": stored["visible_ms"]["p99"],
        "row_visible_ms_max": stored["visible_ms"]["max"],
        "server_cpu_pct": round(100 * cpu / duration_s, 1),
        "server_cpu_us_per_row": round(cpu * 1e6 / stored["rows"], 2) if stored["rows"] else None,
        "server_peak_rss_mb": rss,
        "intake_lag_ms": intake_lag,
        "machine_idle_pct": round(100 * (1 - (busy1 - busy0) / (duration_s * cores)), 1),
    }
    if clients:
        out |= {
            "deliveries_expected": expected,
            "deliveries": delivered,
            "delivered_of_expected": round(delivered / expected, 4) if expected else None,
            "messages_per_frame": round(delivered / max(1, sum(r["frames"] for r in results)), 2),
            "conflated": conflated,
            "latency_ms_p50": round(pct(lat, 0.5) / 1000, 2),
            "latency_ms_p99": round(pct(lat, 0.99) / 1000, 2),
            "latency_ms_max": round(lat[-1] / 1000, 2) if lat else None,
            "server_cpu_us_per_delivery": round(cpu * 1e6 / delivered, 2) if delivered else None,
            "client_cpu_pct": [round(100 * r["cpu_s"] / duration_s, 1) for r in results],
        }
    if errors:
        out["client_errors"] = errors[:5]
    return out


async def main(
    clients: int = 200,
    topics_per_client: int = 5,
    rate: float = 1000.0,
    duration_s: float = 10.0,
    warmup_s: float = 3.0,
    client_procs: int = 2,
    kinds: tuple[str, ...] = KINDS,
    backend: str = "sqlite",
    records: int = 1,
) -> dict[str, object]:
    """Scenario A of issue 13 by default (1,000 trades/s, 200 clients x 5 price topics)."""
    codes = [t.code for t in DEFAULT_TICKERS]
    if clients * topics_per_client % len(codes):
        raise ValueError(f"clients x topics must be a multiple of {len(codes)} (equal audiences)")
    results: dict[str, object] = {
        "cores": os.cpu_count(),
        "setup": f"{clients} clients x {topics_per_client} price topics over {len(codes)} "
        f"codes, {rate:g} trades/s upstream ({records} record(s) per frame at most), "
        f"{duration_s:g} s after {warmup_s:g} s warm-up, {client_procs} client processes, "
        f"{backend}",
    }
    with tempfile.TemporaryDirectory(prefix="tradestream-bench-") as tmp:
        for kind in kinds:
            with scratch(backend, Path(tmp)) as db:
                results[kind] = await _run_one(
                    kind, Path(tmp), clients=clients, topics_per_client=topics_per_client,
                    codes=codes, rate=rate, warmup_s=warmup_s, duration_s=duration_s,
                    client_procs=client_procs, db=db, records=records,
                )  # fmt: skip
    peer = results.get("peer")
    if isinstance(peer, dict):
        for kind in kinds:
            mine = results[kind]
            if kind == "peer" or not isinstance(mine, dict):
                continue
            results[f"ratio_{kind}_vs_peer"] = {
                key: round(mine[key] / peer[key], 2) if mine.get(key) and peer.get(key) else None
                for key in (
                    "deliveries",
                    "latency_ms_p99",
                    "server_cpu_us_per_delivery",
                    "server_cpu_us_per_row",
                    "row_visible_ms_p99",
                )
                if key in mine
            }
    return results


async def overload() -> dict[str, object]:
    """Scenario B: scenario A's clients at 3,000 trades/s."""
    return await main(rate=3000.0, kinds=("tradestream", "peer"))


async def ingest(
    rate: float = 5000.0,
    duration_s: float = 10.0,
    ramp: tuple[float, ...] = (),
    hold_s: float = 60.0,
    records: int = 10,
) -> dict[str, object]:
    """Scenario D: ingest into PostgreSQL, no clients, `rate` trades/s; then, for each rate of
    `ramp`, tradestream alone for `hold_s`, stopping at the first rate it does not hold (every
    trade stored, row-visible p99 <= 250 ms)."""
    out = await main(
        clients=0, rate=rate, duration_s=duration_s, kinds=("tradestream", "peer"),
        backend="postgresql", records=records,
    )  # fmt: skip
    held: list[dict[str, object]] = []
    for r in ramp:
        run = await main(
            clients=0, rate=r, duration_s=hold_s, kinds=("tradestream",),
            backend="postgresql", records=records,
        )  # fmt: skip
        mine = run["tradestream"]
        assert isinstance(mine, dict)
        ok = (mine["stored_of_sent"] or 0) >= 0.999 and mine["row_visible_ms_p99"] <= 250
        held.append({"rate": r, "held": ok, **{k: mine[k] for k in _RAMP_KEYS}})
        if not ok:
            break
    if held:
        out["ramp"] = held
    return out


_RAMP_KEYS = ("trades_per_s", "stored_of_sent", "row_visible_ms_p99", "server_cpu_pct")
