"""The all-in-one process (the default): the simulator, the gateway and the ingest, nested in
shutdown order.

    serving      simulator (if enabled), gateway (run_gateway)        stop last
      ingesting      run_ingest (its own draining and intake nurseries)  stop() ends it

`stop()` stops the ingest's intake; run_ingest returns once every received event is stored.
Then the hub closes the clients with 1001 "server shutdown", and the serving scope is
cancelled, which stops hypercorn and the simulator.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import trio
from sqlalchemy.engine import Connection, Engine

from tradestream.accounts import SyncStats
from tradestream.config import Settings
from tradestream.errors import CannotListen, Fenced
from tradestream.feeds.registry import use_simulator
from tradestream.feeds.session import FeedStatus
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.metrics import GatewayMetrics
from tradestream.history import History
from tradestream.hub import Hub
from tradestream.pipeline.backfill import Backfiller
from tradestream.pipeline.stages import MarketState, RouterStats
from tradestream.redis_bridge import COMMAND_TIMEOUT_S, REDIS_LOST, redis_client
from tradestream.redis_demand import (
    DemandStats,
    RemoteClaims,
    RemoteDemand,
    gateway_id,
    run_demand_in,
    run_demand_out,
)
from tradestream.redis_fanout import (
    FanoutStats,
    RemoteMarket,
    StreamFence,
    TeeHub,
    run_stream_in,
    run_stream_out,
)
from tradestream.redis_lease import Lease, lead
from tradestream.roles.gateway import IngestControls, run_gateway
from tradestream.roles.ingest import Ingest, open_store, run_ingest
from tradestream.roles.status import ingest_status
from tradestream.serving import ws_url
from tradestream.sim.server import SimHandle, run_simulator
from tradestream.slots.driver import SlotDriver
from tradestream.store.fence import Fence, take_token
from tradestream.store.flusher import FlusherStats
from tradestream.strategies import Strategy

log = logging.getLogger("tradestream.service")

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
    slots: SlotDriver
    router: RouterStats
    flusher: FlusherStats
    state: MarketState
    metrics: GatewayMetrics
    side: dict[str, int]  # slot audits and signals to the store: forwarded, dropped
    positions: SyncStats  # reconciliation against the broker's positions
    backfill: Backfiller | None = None  # feed gaps filled from the broker's minute bars
    started_at: float = field(default_factory=time.time)


async def run_service(
    s: Settings,
    *,
    record: Path | None = None,
    replay: Path | None = None,
    replay_speed: float = 0.0,
    strategies: Sequence[Strategy] | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run tradestream until stop() is called (or this task is cancelled, the hard way).

    The arguments are run_ingest's. With `replay` no simulator runs and the service drains and
    returns by itself when the recording ends.

    started(): the gateway is listening and the intake is running; returns `Running`.
    Returns once every received event is stored and the clients have been told to go away.
    """
    g = s.gateway
    history = History(g.history_size, g.history_ttl_s) if g.history_size > 0 else None
    hub: Hub
    if s.role == "ingest":  # every message also goes to the gateways, over Redis
        hub = TeeHub(outbox_max=g.outbox_max, history=history)
    else:
        hub = Hub(outbox_max=g.outbox_max, history=history)
    store = await open_store(s)  # before any task: an out-of-date schema is a plain error
    run = partial(_serve, s, hub, store, record, replay, replay_speed, strategies)
    try:
        if isinstance(hub, TeeHub):
            await _lead(s, hub, store[0], run, task_status)
        else:
            await run(task_status=task_status)
    finally:
        store[0].dispose()


class _Started:
    """A task status that also keeps what was started (the ingest's `stop`)."""

    def __init__(self, outer: trio.TaskStatus[Running]) -> None:
        self.outer = outer
        self.running: Running | None = None
        self.then: Callable[[], None] = lambda: None

    def started(self, value: Running) -> None:
        self.running = value
        self.outer.started(value)
        self.then()


async def _lead(
    s: Settings,
    hub: TeeHub,
    engine: Engine,
    run: Callable[..., Awaitable[None]],
    task_status: trio.TaskStatus[Running],
) -> None:
    """The ingest role: one live ingest per stream across the cluster. Stand by until the
    lease is ours (redis_lease.lead, the token from the database), then run with both fences:
    the store's batches (store/fence.py) and the stream's appends refuse a stale token. A
    newer holder deposes this one: it stops as at a SIGTERM (what the database refuses is
    spooled) and ends with `Fenced`. A clean stop marks the stream's end and frees the lease
    for a standby at once."""
    url, name = s.detect.redis_url, f"ingest:{s.redis_stream}"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    lease = Lease(None, name, holder)
    started = _Started(task_status)
    deposed = False

    def step_down() -> None:
        nonlocal deposed
        if not deposed:
            deposed = True
            log.error("lease %s: a newer ingest holds it; this one stops", name)
            if started.running is not None:
                started.running.stop()

    async def take() -> int:
        return await trio.to_thread.run_sync(take_token, engine, name, holder)

    async def keep(task_status: trio.TaskStatus[int]) -> None:
        await lead(url, lease, take, task_status=task_status)
        step_down()

    async with trio.open_nursery() as leading:
        log.info("ingest: waiting for the lease %s (standing by while another holds it)", name)
        token = await leading.start(keep)
        since = await _last_heard(url, s.redis_stream)
        fence = StreamFence(lease.fence_key, token, step_down)
        await leading.start(partial(run_stream_out, url, hub, stream=s.redis_stream, fence=fence))
        claims: list[RemoteClaims] = []

        async def gateways_demand() -> None:  # once the slot driver exists
            assert started.running is not None
            claims.append(RemoteClaims(started.running.slots))
            await run_demand_in(url, claims[0], base=s.redis_stream)

        def cluster() -> dict[str, Any]:
            st = lease.state
            return {
                "role": "ingest",
                "lease": {
                    "name": name,
                    "holder": holder,
                    "token": st.token,
                    "acquisitions": st.acquisitions,
                    "losses": st.losses,
                },  # fmt: skip
                "stream_out": hub.fanout.as_dict(),
                "demand": claims[0].stats.as_dict() if claims else None,
                "gateways_with_claims": len(claims[0].held) if claims else 0,
            }

        started.then = lambda: leading.start_soon(gateways_demand)
        await run(
            takeover=since,
            write_guard=Fence(name, token).check,
            cluster=cluster,
            task_status=started,
        )
        if not deposed:
            hub.finish()
            with trio.move_on_after(CLIENT_CLOSE_WAIT_S):
                await hub.fanout.finished.wait()
            with trio.move_on_after(CLIENT_CLOSE_WAIT_S):
                async with redis_client(url) as r:
                    lease.use(r)
                    await lease.release()
        leading.cancel_scope.cancel()
    if deposed:
        raise Fenced(name, token)


async def _last_heard(url: str, stream: str) -> datetime | None:
    """When the previous ingest last wrote to the stream, if it died there (no end mark)."""
    last: Any = None
    try:
        with trio.fail_after(COMMAND_TIMEOUT_S):
            async with redis_client(url) as r:
                last = await r.xrevrange(stream, count=1)
    except* (*REDIS_LOST, trio.TooSlowError):
        pass  # Redis is away: the run mark's unclean stop still tells a local restart
    if not last:
        return None
    entry = last[0]
    if entry.field_values.get(b"k") == b"x":
        return None
    ident = entry.identifier
    ms = int((ident.decode() if isinstance(ident, bytes) else ident).split("-")[0])
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class RunningGateway:
    """What run_remote_gateway hands its caller: a gateway fed from Redis."""

    url: str
    ws_url: str
    stop: Callable[[], None]
    hub: Hub
    auth: Authenticator
    market: RemoteMarket
    fanout: FanoutStats
    sim: None = None


async def run_remote_gateway(
    s: Settings, *, task_status: trio.TaskStatus[RunningGateway] = trio.TASK_STATUS_IGNORED
) -> None:
    """The gateway role: clients served from the stream an ingest process writes (no
    brokers, no store). Until stop() is called: then the clients are told to go away."""
    _check_port(s.gateway.host, s.gateway.port)
    g = s.gateway  # a mirror of the ingest's history (its epoch and offsets, as they come)
    history = History(g.history_size, g.history_ttl_s) if g.history_size > 0 else None
    hub = Hub(outbox_max=g.outbox_max, history=history)
    market, stats = RemoteMarket(), FanoutStats()
    demand, demand_stats = RemoteDemand(), DemandStats()
    url, me = s.detect.redis_url, gateway_id()
    done = trio.Event()
    async with trio.open_nursery() as serving:
        await serving.start(partial(run_stream_in, url, hub, market, stats, stream=s.redis_stream))
        await serving.start(
            partial(run_demand_out, url, demand, hub, demand_stats, base=s.redis_stream, gateway=me)
        )
        gw = await serving.start(
            partial(
                run_gateway,
                s.gateway,
                hub,
                market,
                demand,
                status=lambda admin: {
                    "role": "gateway",
                    "gateway_id": me,
                    "redis": stats.as_dict(),
                    "demand": {**demand_stats.as_dict(), "claimed": len(demand.pairs())},
                },
            )
        )
        log.info("tradestream gateway serving on %s, fed from %s", gw.url, s.redis_stream)
        task_status.started(
            RunningGateway(gw.url, gw.ws_url, done.set, hub, gw.auth, market, stats)
        )
        await done.wait()
        hub.close_all()
        with trio.move_on_after(CLIENT_CLOSE_WAIT_S):
            await hub.wait_empty()
        serving.cancel_scope.cancel()


def _status(
    ing: Ingest, cluster: Callable[[], dict[str, Any]] | None, admin: bool
) -> dict[str, Any]:
    out = ingest_status(ing, admin)
    if cluster is not None:
        out["cluster"] = cluster()
    return out


def _check_port(host: str, port: int) -> None:
    """CannotListen now if the gateway's port is taken, rather than after the feeds have
    started (the real bind, later, still reports a port taken meanwhile)."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CannotListen(host, port, exc.strerror or str(exc)) from None


async def _serve(
    s: Settings,
    hub: Hub,
    store: tuple[Engine, MarketState],
    record: Path | None,
    replay: Path | None,
    replay_speed: float,
    strategies: Sequence[Strategy] | None,
    *,
    takeover: datetime | None = None,
    write_guard: Callable[[Connection], None] | None = None,
    cluster: Callable[[], dict[str, Any]] | None = None,
    task_status: trio.TaskStatus[Running] | _Started,
) -> None:
    _check_port(s.gateway.host, s.gateway.port)  # before anything starts taking data
    async with trio.open_nursery() as serving:
        sim: SimHandle | None = None
        on_sim = s.sim.enabled and replay is None
        kis_on_sim = on_sim and not s.kis.ws_url  # the simulator trades around the clock
        if on_sim:
            sim = await serving.start(run_simulator, s.sim)
            s = use_simulator(s, sim.rest_url, ws_url(sim.rest_url, ""))
        async with trio.open_nursery() as ingesting:
            ing = await ingesting.start(
                partial(
                    run_ingest,
                    s,
                    hub,
                    record=record,
                    replay=replay,
                    replay_speed=replay_speed,
                    strategies=strategies,
                    always_open=kis_on_sim,
                    store=store,
                    takeover=takeover,
                    write_guard=write_guard,
                )
            )
            gw = await serving.start(
                partial(
                    run_gateway,
                    s.gateway,
                    hub,
                    ing.state,
                    ing.slots,
                    status=partial(_status, ing, cluster),
                    engine=ing.engine,
                    controls=IngestControls(ing.slots, ing.scanner, ing.signals, ing.kept_picks),
                )
            )
            log.info("tradestream serving on %s", gw.url)
            task_status.started(
                Running(
                    url=gw.url,
                    ws_url=gw.ws_url,
                    stop=ing.stop,
                    hub=hub,
                    auth=gw.auth,
                    sim=sim,
                    feeds=ing.feeds,
                    slots=ing.slots,
                    router=ing.router,
                    flusher=ing.flusher,
                    state=ing.state,
                    metrics=gw.metrics,
                    side=ing.side,
                    positions=ing.positions,
                    backfill=ing.backfill,
                )
            )
        hub.close_all()
        with trio.move_on_after(CLIENT_CLOSE_WAIT_S):
            await hub.wait_empty()
        serving.cancel_scope.cancel()
