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
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from tradestream import topics
from tradestream.bench.clients import (
    assign,
    collect,
    machine_busy_s,
    open_window,
    pct,
    start_clients,
    stop,
    topic_lists,
    wait_ready,
)
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
    assignment = assign(codes, clients, topics_per_client)
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

        procs = await start_clients(urls, topic_lists(assignment), client_procs, stride)
        try:
            await wait_ready(procs)
            start_ns, end_ns = await open_window(procs, warmup_s, duration_s)

            def snapshot() -> tuple[float, int, int, int, int, float]:
                hub = running.tradestream
                conflated = hub.conflated_total() if hub else 0
                return (
                    time.process_time(),
                    producer.emitted,
                    producer.offered,
                    producer.skipped,
                    conflated,
                    machine_busy_s(),
                )

            await trio.sleep((start_ns - time.time_ns()) / 1e9)
            s0 = snapshot()
            await trio.sleep((end_ns - time.time_ns()) / 1e9)
            s1 = snapshot()
            results = await collect(procs)
        finally:
            await stop(procs)
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
        "latency_ms_p50": round(pct(lat, 0.5) / 1000, 2),
        "latency_ms_p99": round(pct(lat, 0.99) / 1000, 2),
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
