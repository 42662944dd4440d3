"""The nursery tree: simulator, gateway, pipeline, flusher and feeds, in shutdown order.

    outer    simulator (if enabled), gateway          stop last
      draining   tick router, flusher                 end on EndOfChannel
        intake       KIS feed session(s)             cancelled by stop()

`stop()` cancels intake only. Each feed closes its upstream socket with 1000 and its channel
end; the router drains and closes the store channel; the flusher writes the tail and returns.
With every tick stored, the hub closes the clients with 1001 "server shutdown", and the outer
scope is cancelled, which stops hypercorn and the simulator. Edges and their back-pressure:

    feed --ticks (block)--> router --ticks (block)--> flusher --> database
                              \\--> hub --> client outboxes (conflate prices / close when full)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from tradestream.config import Settings
from tradestream.events import Tick
from tradestream.feeds.session import FeedStatus, run_kis_feed
from tradestream.gateway.app import GatewayContext, create_app
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.serve import serve_app, ws_url
from tradestream.hub import Hub
from tradestream.pipeline.stages import RouterStats, run_tick_router
from tradestream.sim.kis_server import SimHandle, run_simulator
from tradestream.store import migrate
from tradestream.store.flusher import FlusherStats, FlushPolicy, ThreadedSink, run_flusher
from tradestream.store.writer import TickWriter, make_engine

log = logging.getLogger(__name__)

CLIENT_CLOSE_WAIT_S = 2.0  # how long clients get to receive their 1001 before we stop serving


@dataclass
class Running:
    """What run_service hands its caller once everything is up."""

    url: str  # the gateway's base URL, e.g. http://127.0.0.1:8000
    ws_url: str
    stop: Callable[[], None]
    hub: Hub
    auth: Authenticator
    sim: SimHandle | None
    feeds: list[FeedStatus]
    router: RouterStats
    flusher: FlusherStats
    started_at: float = field(default_factory=time.time)


def _channel_stats(*chans: tuple[str, trio.MemorySendChannel[Tick]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, ch in chans:
        st = ch.statistics()
        out[name] = {"depth": st.current_buffer_used, "size": st.max_buffer_size}
    return out


async def run_service(
    s: Settings, *, task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run tradestream until stop() is called (or this task is cancelled, the hard way).

    started(): the gateway is listening and the feeds are running; returns `Running`.
    Returns once every received tick is stored and the clients have been told to go away.
    """
    engine = make_engine(s.store.url)
    if s.store.auto_upgrade:
        await trio.to_thread.run_sync(migrate.upgrade, engine)
    await trio.to_thread.run_sync(migrate.check, engine)

    hub = Hub(outbox_max=s.gateway.outbox_max)
    auth = Authenticator(s.gateway.jwt_secret)
    latest: dict[str, Tick] = {}
    feeds = [FeedStatus(name="kis-1")]
    router_stats, flusher_stats = RouterStats(), FlusherStats()
    ticks_out, ticks_in = trio.open_memory_channel[Tick](s.pipeline.tick_buffer)  # block
    store_out, store_in = trio.open_memory_channel[Tick](s.pipeline.store_buffer)  # block
    sim: SimHandle | None = None

    def status() -> dict[str, object]:
        return {
            "active_connections": len(hub.clients),
            "active_users": list(hub.users()),
            "subscriptions": hub.subscriptions(),
            "price_streamer_running": any(f.state == "streaming" for f in feeds),
            "upstream": [f.as_dict() for f in feeds],
            "queues": _channel_stats(("ticks", ticks_out), ("store", store_out)),
            "router": router_stats.as_dict(),
            "store": flusher_stats.as_dict(),
            "uptime_s": round(time.time() - started_at, 3),
        }

    started_at = time.time()
    try:
        async with trio.open_nursery() as outer:
            if s.sim.enabled:
                sim = await outer.start(run_simulator, s.sim)
                s = s.with_sim_urls(sim.rest_url, sim.ws_url)
            ctx = GatewayContext(hub=hub, auth=auth, streamed=frozenset(s.kis.watchlist),
                                 latest=latest, status=status)
            binds = await outer.start(
                serve_app, create_app(ctx), s.gateway.host, s.gateway.port
            )
            base = binds[0]
            async with trio.open_nursery() as draining:
                sink = ThreadedSink(TickWriter(engine).write)
                policy = FlushPolicy(max_rows=s.store.flush_rows,
                                     max_delay_s=s.store.flush_interval_s,
                                     final_write_s=s.store.final_write_s)
                await draining.start(run_flusher, store_in, sink, policy, flusher_stats)
                await draining.start(run_tick_router, ticks_in, store_out, hub, latest,
                                     router_stats)
                async with trio.open_nursery() as intake:
                    with ticks_out:  # our original; the feed holds a clone
                        await intake.start(run_kis_feed, s.kis, ticks_out.clone(), feeds[0])
                    log.info("tradestream serving on %s", base)
                    task_status.started(Running(
                        url=base, ws_url=ws_url(base, "/api/ws"), stop=intake.cancel_scope.cancel,
                        hub=hub, auth=auth, sim=sim, feeds=feeds, router=router_stats,
                        flusher=flusher_stats,
                    ))
                log.info("intake stopped; draining the pipeline")
            log.info("pipeline drained: %d ticks received, %d stored in %d batches",
                     router_stats.ticks, flusher_stats.rows, flusher_stats.batches)
            hub.close_all()
            with trio.move_on_after(CLIENT_CLOSE_WAIT_S):
                await hub.wait_empty()
            outer.cancel_scope.cancel()
    finally:
        engine.dispose()
