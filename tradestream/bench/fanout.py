"""Fan-out: price updates from "upstream receive" to many WebSocket clients, tradestream's
gateway (Hub + per-client conflating outbox, batched frames) against a minimal seed-style
server (topic -> set of sockets, `for ws in subs: await ws.send(json.dumps(msg))` per tick).

The servers run in this process, one after the other, on the same producer: ticks for
`tickers` codes at `rate` ticks/s (uniformly random code, paced every 5 ms) go into a bounded
memory channel like the pipeline's feed -> router channel. Each tick's `received_ns` is the
wall clock when it enters the channel ("upstream receive"); its `volume` carries that instant
in µs so that clients can compute the latency. tradestream: the real `run_router` consumes
the channel (store edge drained by a no-op consumer) into the real Hub and `create_app`
gateway. Baseline: one task consumes the channel and awaits each subscriber's send in turn.

Clients run in separate processes (`client_procs`, trio-websocket), so this process's CPU
time is the server's (plus the producer, the same for both). Each client subscribes to
`topics_per_client` price topics, spread so that every code has the same number of
subscribers; it decodes every frame (one object or, with batch=1, an array) and measures
latency = client receive wall clock - upstream receive. Everything is counted over a fixed
window (`duration_s`) after a warm-up, agreed on in wall-clock time between the processes.

"Offered" deliveries are ticks x subscribers of their code; tradestream conflates prices per
client when a client is behind, so it may deliver fewer than offered (counted as conflated).
The baseline never drops, but when it falls behind, the channel fills (latency grows up to
the channel's length) and then the producer blocks: fewer ticks are offered at all (see
`ticks_per_s`); ticks that fell due while it was blocked (or starved of CPU) for more than
50 ms are skipped (`ticks_skipped_producer_late`), not offered and not counted.

CPU per delivery is this process's CPU time in the window over deliveries; `..._net_of_idle`
first subtracts the CPU measured with the producer running and no client connected.
`other_processes_cpu_pct` is everyone else's CPU on the machine during the window: figures
taken while it is high are not comparable between runs.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
import trio

from tradestream import topics
from tradestream.config import PipelineSettings
from tradestream.events import KST, Event, Tick
from tradestream.gateway.app import WsServices, create_app
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.ports import StaticDemand
from tradestream.hub import Hub
from tradestream.pipeline.stages import MarketState, RouterStats, run_router
from tradestream.serving import serve_app, ws_url
from tradestream.sim.market import DEFAULT_TICKERS

SECRET = "bench-secret-bench-secret-bench-secret"
PACE_S = 0.005  # the producer emits what is due every 5 ms
MAX_LATENCY_SAMPLES = 400_000  # over all client processes, per server run


# -- producer -------------------------------------------------------------------------------------


@dataclass
class Producer:
    codes: list[str]
    subscribers: dict[str, int]  # code -> subscribed clients (known from the assignment)
    rate: float
    emitted: int = 0
    offered: int = 0  # sum of subscribers over emitted ticks
    skipped: int = 0  # ticks never emitted: the producer was >50 ms late (channel full, or
    #                   the process had no CPU for it)
    prices: dict[str, int] = field(default_factory=dict)

    async def run(self, out: trio.MemorySendChannel[Event]) -> None:
        rng = random.Random(7)
        base = {t.code: t.base_price for t in DEFAULT_TICKERS}
        codes, n = self.codes, len(self.codes)
        start = trio.current_time()
        scheduled = 0  # ticks due since start, emitted or skipped
        while True:
            due = int((trio.current_time() - start) * self.rate)
            if due - scheduled > self.rate * 0.05:  # >50 ms behind: skip, don't burst
                self.skipped += due - scheduled - 1
                scheduled = due - 1
            while scheduled < due:
                scheduled += 1
                code = codes[rng.randrange(n)]
                price = self.prices.get(code) or base.get(code, 10_000)
                price = max(100, price + rng.choice((-100, 0, 0, 100)))
                self.prices[code] = price
                now_ns = time.time_ns()
                prev = base.get(code, 10_000)
                tick = Tick(
                    source="bench",
                    venue="KRX",
                    code=code,
                    trade_time=datetime.fromtimestamp(now_ns / 1e9, KST),
                    price=price,
                    change=price - prev,
                    change_percent=round((price - prev) * 100 / prev, 2),
                    open=prev,
                    high=max(prev, price),
                    low=min(prev, price),
                    ask=price + 100,
                    bid=price,
                    trade_volume=rng.randint(1, 500),
                    volume=now_ns // 1000,  # carries "upstream receive" (µs) to the clients
                    value=0,
                    strength=100.0,
                    received_ns=now_ns,
                )
                try:  # a feed hands over a frame's records at once; no checkpoint each
                    out.send_nowait(tick)
                except trio.WouldBlock:
                    await out.send(tick)  # the consumer is behind: block (lossless edge)
                self.emitted += 1
                self.offered += self.subscribers.get(code, 0)
            await trio.sleep(PACE_S)


# -- servers --------------------------------------------------------------------------------------


async def _drain(rx: trio.MemoryReceiveChannel[Event]) -> None:
    async with rx:
        async for _ in rx:
            pass


@dataclass
class Running:
    url: str  # without query string
    tradestream: Hub | None = None
    stats: dict[str, Any] = field(default_factory=dict)


async def serve_tradestream(
    codes: list[str],
    events_in: trio.MemoryReceiveChannel[Event],
    router: Any = run_router,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    hub = Hub()
    state = MarketState()
    stats = RouterStats()
    ws = WsServices(hub, Authenticator(SECRET), state, StaticDemand(frozenset(codes)))
    store_out, store_in = trio.open_memory_channel[Event](PipelineSettings().store_buffer)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run_cadence)
        await nursery.start(hub.run_coalescer)
        binds = await nursery.start(
            serve_app,
            create_app(ws, status=lambda admin: {"router": stats.as_dict()}),
            "127.0.0.1",
            0,
        )
        nursery.start_soon(_drain, store_in)
        await nursery.start(router, events_in, store_out, hub, state, stats)
        task_status.started(
            Running(ws_url(binds[0], "/api/ws"), tradestream=hub, stats={"router": stats})
        )


def seed_app(events_in: trio.MemoryReceiveChannel[Event]) -> tuple[Any, Any]:
    """The seed's server (003/004), on the same stack: a connection manager of topic -> set of
    sockets and a broadcaster that awaits `send` for each subscriber of each tick, encoding
    the message per send as the seed's `send_json` does. Returns the app and the broadcaster
    (to run next to it)."""
    from quart import websocket
    from quart_trio import QuartTrio

    app = QuartTrio("seed-baseline")
    subscriptions: dict[str, set[Any]] = {}

    async def broadcast(message: dict[str, Any], topic: str) -> None:
        dead = []
        for ws in list(subscriptions.get(topic, ())):
            try:
                await ws.send(json.dumps(message, separators=(",", ":"), ensure_ascii=False))
            except Exception:
                dead.append(ws)
        for ws in dead:
            for subs in subscriptions.values():
                subs.discard(ws)

    async def price_streamer() -> None:
        async with events_in:
            async for t in events_in:
                if not isinstance(t, Tick):
                    continue
                await broadcast(
                    {
                        "type": "price_update",
                        "symbol": t.code,
                        "data": {
                            "price": t.price,
                            "change": t.change,
                            "change_percent": t.change_percent,
                            "volume": t.volume,
                            "timestamp": t.trade_time.isoformat(),
                        },
                    },
                    topic=topics.price(t.code),
                )

    @app.websocket("/api/ws")
    async def ws_endpoint() -> None:
        await websocket.accept()
        # The subscriber sets need this connection's own object, not the context-local proxy;
        # quart types `websocket` as the Websocket itself, so the proxy method is unknown.
        ws = websocket._get_current_object()  # type: ignore[attr-defined]
        await ws.send(json.dumps({"type": "connected", "message": "Welcome!"}))
        try:
            while True:
                msg = json.loads(await ws.receive())
                if msg.get("type") == "subscribe":
                    subscriptions.setdefault(msg["topic"], set()).add(ws)
                    await ws.send(
                        json.dumps(
                            {
                                "type": "subscribed",
                                "topic": msg["topic"],
                                "message": f"Successfully subscribed to {msg['topic']}",
                            }
                        )
                    )
                elif msg.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
        finally:
            for subs in subscriptions.values():
                subs.discard(ws)

    return app, price_streamer


async def serve_seed(
    events_in: trio.MemoryReceiveChannel[Event],
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    app, price_streamer = seed_app(events_in)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve_app, app, "127.0.0.1", 0)
        nursery.start_soon(price_streamer)
        task_status.started(Running(ws_url(binds[0], "/api/ws")))


# -- client processes -----------------------------------------------------------------------------


async def _read_line(stream: trio.abc.ReceiveStream, buf: bytearray) -> bytes:
    while b"\n" not in buf:
        chunk = await stream.receive_some()
        if not chunk:
            raise EOFError("stream ended")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


class _ClientStats:
    def __init__(self, stride: int) -> None:
        self.start_ns = math.inf
        self.end_ns = -math.inf
        self.messages = 0
        self.frames = 0
        self.stride = stride
        self.latencies_us = array("q")
        self.errors: list[str] = []


async def _one_client(
    url: str,
    topics: list[str],
    st: _ClientStats,
    ready: trio.Semaphore,
    limiter: trio.CapacityLimiter,
) -> None:
    from trio_websocket import open_websocket_url

    decode = msgspec.json.decode
    async with limiter:  # don't flood the listen backlog
        ws_cm = open_websocket_url(url, max_message_size=16 * 1024 * 1024)
        ws = await ws_cm.__aenter__()
    try:
        for topic in topics:
            await ws.send_message(json.dumps({"type": "subscribe", "topic": topic}))
        pending = len(topics)
        n = 0
        while True:
            raw = await ws.get_message()
            now = time.time_ns()
            obj = decode(raw)
            items = obj if isinstance(obj, list) else (obj,)
            counted = st.start_ns <= now < st.end_ns
            if counted:
                st.frames += 1
            now_us = now // 1000
            for item in items:
                kind = item.get("type")
                if kind == "price_update":
                    if counted:
                        st.messages += 1
                        n += 1
                        if n % st.stride == 0:
                            st.latencies_us.append(now_us - item["data"]["volume"])
                elif kind == "subscribed":
                    pending -= 1
                    if pending == 0:
                        ready.release()
                elif kind == "ping":
                    await ws.send_message(json.dumps({"type": "pong"}))
                elif kind == "error":
                    st.errors.append(str(item))
    finally:
        with trio.move_on_after(0.5) as scope:
            scope.shield = True
            try:
                await ws_cm.__aexit__(None, None, None)
            except Exception:
                pass


async def _client_process(cfg: dict[str, Any]) -> None:
    clients: list[list[str]] = cfg["topics"]
    st = _ClientStats(cfg["stride"])
    ready = trio.Semaphore(len(clients))
    for _ in clients:
        ready.acquire_nowait()
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buf = bytearray()
    limiter = trio.CapacityLimiter(20)
    async with trio.open_nursery() as nursery:
        for i, topics in enumerate(clients):
            nursery.start_soon(_one_client, cfg["urls"][i], topics, st, ready, limiter)
        for _ in clients:
            await ready.acquire()
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        start_ns, end_ns = map(int, (await _read_line(stdin, buf)).split())
        st.start_ns, st.end_ns = start_ns, end_ns
        await trio.sleep(max(0.0, (start_ns - time.time_ns()) / 1e9))
        cpu0 = time.process_time()
        await trio.sleep(max(0.0, (end_ns - time.time_ns()) / 1e9))
        cpu1 = time.process_time()
        nursery.cancel_scope.cancel()
    sys.stdout.write(
        json.dumps(
            {
                "messages": st.messages,
                "frames": st.frames,
                "cpu_s": cpu1 - cpu0,
                "errors": st.errors[:5],
                "latencies_us": st.latencies_us.tolist(),
            }
        )
        + "\n"
    )
    sys.stdout.flush()


def client_main() -> None:
    """Entry point of a client process: `python -c '...client_main()' CONFIG_JSON`."""
    trio.run(_client_process, json.loads(sys.argv[1]))


# -- one run --------------------------------------------------------------------------------------


def _machine_busy_s() -> float:
    """CPU seconds all processes on this machine have used (Linux /proc/stat), or NaN."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _pct(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[i]


async def _run_one(
    kind: str,
    *,
    clients: int,
    topics_per_client: int,
    codes: list[str],
    rate: float,
    warmup_s: float,
    duration_s: float,
    client_procs: int,
    channel: int,
    calibrate_s: float,
) -> dict[str, Any]:
    # client i watches codes i*k .. i*k+k-1 (mod n): every code gets the same audience
    assignment = [
        [codes[(i * topics_per_client + j) % len(codes)] for j in range(topics_per_client)]
        for i in range(clients)
    ]
    subscribers: dict[str, int] = {}
    for watch in assignment:
        for code in set(watch):
            subscribers[code] = subscribers.get(code, 0) + 1
    expected = rate * duration_s * sum(subscribers.values()) / len(codes)
    stride = max(1, math.ceil(expected / MAX_LATENCY_SAMPLES))
    producer = Producer(codes, subscribers, rate)
    events_out, events_in = trio.open_memory_channel[Event](channel)
    auth = Authenticator(SECRET)

    async with trio.open_nursery() as nursery:
        if kind == "seed":
            running = await nursery.start(serve_seed, events_in)
            urls = [running.url for _ in range(clients)]
        else:
            running = await nursery.start(serve_tradestream, codes, events_in, run_router)
            query = "" if kind == "tradestream_unbatched" else "&batch=1"
            urls = [
                f"{running.url}?token={auth.issue(f'bench-{i}')}{query}" for i in range(clients)
            ]
        nursery.start_soon(producer.run, events_out)
        # the server's CPU with the producer running and nobody subscribed yet
        await trio.sleep(0.5)
        cpu0 = time.process_time()
        await trio.sleep(calibrate_s)
        idle_cpu_s = (time.process_time() - cpu0) / calibrate_s * duration_s

        procs, bufs = [], []
        for p in range(client_procs):
            mine = list(range(p, clients, client_procs))
            cfg = {
                "urls": [urls[i] for i in mine],
                "topics": [[topics.price(c) for c in assignment[i]] for i in mine],
                "stride": stride,
            }
            procs.append(
                await trio.lowlevel.open_process(
                    [
                        sys.executable,
                        "-c",
                        "from tradestream.bench.fanout import client_main; client_main()",
                        json.dumps(cfg),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
            bufs.append(bytearray())
        try:
            with trio.fail_after(60):
                for proc, buf in zip(procs, bufs, strict=True):
                    assert proc.stdout is not None
                    line = await _read_line(proc.stdout, buf)
                    assert line == b"ready", line
            start_ns = time.time_ns() + int(warmup_s * 1e9)
            end_ns = start_ns + int(duration_s * 1e9)
            for proc in procs:
                assert proc.stdin is not None
                await proc.stdin.send_all(f"{start_ns} {end_ns}\n".encode())

            def snapshot() -> tuple[float, int, int, int, int, float]:
                hub = running.tradestream
                conflated = hub.conflated_total() if hub else 0
                return (
                    time.process_time(),
                    producer.emitted,
                    producer.offered,
                    producer.skipped,
                    conflated,
                    _machine_busy_s(),
                )

            await trio.sleep((start_ns - time.time_ns()) / 1e9)
            s0 = snapshot()
            await trio.sleep((end_ns - time.time_ns()) / 1e9)
            s1 = snapshot()
            results = []
            with trio.fail_after(30):
                for proc, buf in zip(procs, bufs, strict=True):
                    assert proc.stdout is not None
                    results.append(json.loads(await _read_line(proc.stdout, buf)))
                    await proc.wait()
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
            if running.tradestream is not None:
                running.tradestream.close_all()
            nursery.cancel_scope.cancel()

    cpu, ticks, offered, skipped, conflated, busy = (b - a for a, b in zip(s0, s1, strict=True))
    delivered = sum(r["messages"] for r in results)
    frames = sum(r["frames"] for r in results)
    lat = sorted(x for r in results for x in r["latencies_us"])
    errors = [e for r in results for e in r["errors"]]
    out: dict[str, Any] = {
        "ticks_per_s": round(ticks / duration_s),
        "ticks_skipped_producer_late": skipped,
        "offered_deliveries_per_s": round(offered / duration_s),
        "deliveries_per_s": round(delivered / duration_s),
        "delivered_of_offered": round(delivered / offered, 3) if offered else None,
        "frames_per_s": round(frames / duration_s),
        "latency_ms_p50": round(_pct(lat, 0.5) / 1000, 2),
        "latency_ms_p99": round(_pct(lat, 0.99) / 1000, 2),
        "latency_ms_max": round(lat[-1] / 1000, 2) if lat else None,
        "latency_samples": len(lat),
        "server_cpu_pct": round(100 * cpu / duration_s, 1),
        "server_cpu_us_per_delivery": round(cpu * 1e6 / delivered, 2) if delivered else None,
        "server_idle_cpu_pct": round(100 * idle_cpu_s / duration_s, 1),
        "server_cpu_us_per_delivery_net_of_idle": round((cpu - idle_cpu_s) * 1e6 / delivered, 2)
        if delivered
        else None,
        "client_cpu_pct": [round(100 * r["cpu_s"] / duration_s, 1) for r in results],
        # other processes on the machine during the window (noise), % of one core
        "other_processes_cpu_pct": round(
            100 * (busy - cpu - sum(r["cpu_s"] for r in results)) / duration_s, 1
        ),
    }
    if running.tradestream is not None:
        out["conflated_per_s"] = round(conflated / duration_s)
    if errors:
        out["client_errors"] = errors[:5]
    return out


async def main(
    clients: int = 200,
    topics_per_client: int = 5,
    tickers: int = 50,
    rate: float = 2000.0,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    client_procs: int = 2,
    unbatched: bool = True,
    channel: int = PipelineSettings().tick_buffer,
    calibrate_s: float = 2.0,
) -> dict[str, object]:
    """Run the scenario for tradestream (batch=1; without batching if `unbatched`) and the
    seed-style baseline; figures per server, and tradestream/baseline ratios."""
    codes = [t.code for t in DEFAULT_TICKERS[:tickers]]
    if len(codes) < tickers:
        raise ValueError(f"at most {len(DEFAULT_TICKERS)} tickers")
    kinds = ["tradestream_batch"] + (["tradestream_unbatched"] if unbatched else []) + ["seed"]
    results: dict[str, object] = {
        "cores": os.cpu_count(),
        "setup": f"{clients} clients x {topics_per_client} topics over {tickers} tickers, "
        f"{rate:g} ticks/s, {duration_s:g} s after {warmup_s:g} s warm-up, "
        f"{client_procs} client processes, channel {channel}",
    }
    runs: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        runs[kind] = await _run_one(
            kind,
            clients=clients,
            topics_per_client=topics_per_client,
            codes=codes,
            rate=rate,
            warmup_s=warmup_s,
            duration_s=duration_s,
            client_procs=client_procs,
            channel=channel,
            calibrate_s=calibrate_s,
        )
        results[kind] = runs[kind]
    base = runs["seed"]

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 2) if a and b else None

    for kind in kinds[:-1]:
        r = runs[kind]
        results[f"ratio_{kind}_vs_seed"] = {
            "deliveries_per_s": ratio(r["deliveries_per_s"], base["deliveries_per_s"]),
            "latency_p50": ratio(r["latency_ms_p50"], base["latency_ms_p50"]),
            "latency_p99": ratio(r["latency_ms_p99"], base["latency_ms_p99"]),
            "cpu_per_delivery": ratio(
                r["server_cpu_us_per_delivery"], base["server_cpu_us_per_delivery"]
            ),
        }
    return results
