"""The nursery tree: simulator, gateway, pipeline, flusher and feeds, in shutdown order.

    outer    simulator (if enabled), gateway          stop last
      draining   router, flusher, recorder            end on EndOfChannel
        intake       KIS and LS feed sessions        cancelled by stop()
                     (or a replay, which ends by itself)

`stop()` cancels intake only. Each feed closes its upstream socket with 1000 and its channel
end; the router drains and closes the store channel; the flusher writes the tail and returns.
With every tick stored, the hub closes the clients with 1001 "server shutdown", and the outer
scope is cancelled, which stops hypercorn and the simulator. Edges and their back-pressure:

    feeds --events (block)--> router --events (block)--> flusher --> database
      \\--raw frames (block)--> recorder       \\--> hub --> client outboxes
                                                  (conflate prices / close when full)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import trio

from tradestream import topics, wire
from tradestream.accounts import HttpPositions, RouterProgress, SyncStats, run_positions_sync
from tradestream.config import Settings
from tradestream.detect.movers import MoverScanner
from tradestream.detect.sudden import SuddenMoveDetector
from tradestream.events import KST, Alert, Event, Signal, SlotAudit, Tick
from tradestream.feeds.kis.adapter import KisAdapter, kis_timing
from tradestream.feeds.ls.adapter import LsAdapter, ls_timing
from tradestream.feeds.record import Frame, RecorderStats, run_recorder, run_replay
from tradestream.feeds.session import FeedStatus, FeedTiming, run_feed
from tradestream.gateway.app import GatewayContext, create_app
from tradestream.gateway.auth import Authenticator
from tradestream.gateway.metrics import GatewayMetrics
from tradestream.gateway.signals_api import SignalPublisher, register_signals
from tradestream.gateway.slots_api import register_slots
from tradestream.hub import Hub, Msg
from tradestream.pipeline.stages import (
    MarketState,
    RouterStats,
    alert_data,
    alert_from,
    run_router,
)
from tradestream.serving import serve_app, ws_url
from tradestream.sim.server import SimHandle, run_simulator
from tradestream.slots import hours
from tradestream.slots.driver import SlotDriver, SlotSession
from tradestream.slots.policy import Audit, Rejection, SlotManager, usable_capacity
from tradestream.store import migrate, reads
from tradestream.store.flusher import FlusherStats, FlushPolicy, ThreadedSink, run_flusher
from tradestream.store.spool import Spool
from tradestream.store.writer import EventWriter, make_engine, transient
from tradestream.strategies import NewsKeywordStrategy, Strategy, StrategyHost

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
    slots: SlotDriver
    router: RouterStats
    flusher: FlusherStats
    state: MarketState
    metrics: GatewayMetrics
    side: dict[str, int]  # slot audits and signals to the store: forwarded, dropped
    positions: SyncStats  # reconciliation against the broker's positions
    started_at: float = field(default_factory=time.time)


def _channel_stats(*chans: tuple[str, trio.MemorySendChannel[Event]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, ch in chans:
        st = ch.statistics()
        out[name] = {"depth": st.current_buffer_used, "size": st.max_buffer_size}
    return out


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

    `strategies` replaces the shipped ones (the news keyword strategy).
    With `record`, every raw upstream frame is appended to that file. With `replay`, a
    recording is the intake instead of the feeds (and no simulator runs); the service then
    drains and returns by itself when the recording ends.

    started(): the gateway is listening and the intake is running; returns `Running`.
    Returns once every received event is stored and the clients have been told to go away.
    """
    engine = make_engine(s.store.url)
    if s.store.auto_upgrade:
        await trio.to_thread.run_sync(migrate.upgrade, engine)
    await trio.to_thread.run_sync(migrate.check, engine)

    # The day's orders and fills so far: the account book (get_account, holdings) survives
    # a restart. Positions older than today come from the broker, not from here.
    today = datetime.now(KST).replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = await trio.to_thread.run_sync(reads.executions_since, engine, today)
    hub = Hub(outbox_max=s.gateway.outbox_max)
    g = s.gateway
    auth = Authenticator(g.jwt_secret, algorithm=g.jwt_algorithm, public_key=g.jwt_public_key,
                         leeway_s=g.jwt_leeway_s)
    state = MarketState()
    for ex in earlier:
        state.accounts.apply(ex)
    metrics = GatewayMetrics()
    feeds: list[FeedStatus] = []
    router_stats, flusher_stats, recorder_stats = RouterStats(), FlusherStats(), RecorderStats()
    events_out, events_in = trio.open_memory_channel[Event](s.pipeline.tick_buffer)  # block
    store_out, store_in = trio.open_memory_channel[Event](s.pipeline.store_buffer)  # block
    frames_out, frames_in = trio.open_memory_channel[Frame](s.pipeline.tick_buffer)  # block
    sim: SimHandle | None = None
    kis_adapters: list[KisAdapter] = []
    slots: SlotDriver
    bridge_stats: Any = None
    scanner = MoverScanner()
    scanner_posted: set[str] = set()
    positions_stats = SyncStats()
    # a positions answer is applied only behind the notices received before it (accounts.py)
    router_progress = RouterProgress(events_out)
    d = s.detect
    detector = SuddenMoveDetector(window_s=d.window_s, threshold=d.threshold,
                                  debounce_s=d.debounce_s)
    # Events made outside the feeds (slot audits, signals; already published where they
    # apply) go straight to the store through this edge, beside the router. Producers never
    # wait: a full or closed edge drops and counts. It closes once the router and the
    # strategies are done, so the signals of a drain are stored too.
    # producers never wait (a full edge drops and counts), a forwarder in intake hands them on.
    side_out, side_in = trio.open_memory_channel[Event](1000)
    side_stats = {"forwarded": 0, "dropped": 0}

    def side(ev: Event) -> None:
        try:
            side_out.send_nowait(ev)
        except (trio.WouldBlock, trio.ClosedResourceError):
            side_stats["dropped"] += 1

    def audit(a: Audit) -> None:
        side(SlotAudit("slots", datetime.fromtimestamp(a.at, KST), a.action, a.session or "",
                       a.tr_id, a.code, a.priority.name.lower(), a.reason))

    signals = SignalPublisher(hub, side)
    # Alerts to Redis for external consumers (seed 001): best effort, never waits.
    redis_out, redis_in = trio.open_memory_channel[tuple[str, bytes]](1000)
    redis_stats: dict[str, object] = {"configured": bool(d.redis_url), "dropped_here": 0}

    def to_redis(alert: Alert) -> None:
        if not d.redis_url:
            return
        try:
            redis_out.send_nowait((d.redis_alert_channel, msgspec.json.encode(
                {"symbol": alert.code, **alert_data(alert)})))
        except trio.WouldBlock:
            redis_stats["dropped_here"] = int(redis_stats["dropped_here"]) + 1  # type: ignore

    def emit(strategy_id: str, payload: dict[str, object]) -> None:
        topic = topics.strategy(strategy_id)
        hub.publish(topic, Msg(wire.strategy_signal(strategy_id, payload),
                               "strategy_signal", time.time_ns()))
        side(Signal("strategy", topic, strategy_id, str(payload.get("symbol") or "")[:12],
                    payload, datetime.now(KST), time.time_ns()))

    host = StrategyHost(list(strategies) if strategies is not None
                        else [NewsKeywordStrategy(prices=state.latest)], emit)
    strategies_scope = trio.CancelScope()
    strategies_done = trio.Event()

    async def run_strategies(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                             ) -> None:
        try:
            with strategies_scope:
                await host.run(task_status=task_status)
        finally:
            strategies_done.set()

    async def route(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await run_router(
                events_in, store_out_router, hub, state, router_stats,
                on_holding=lambda _: holdings_changed(), on_tick=on_tick, observe=observe,
                task_status=task_status)
        finally:
            host.close()  # they finish what they hold, within STRATEGY_DRAIN_S
            try:
                with trio.move_on_after(STRATEGY_DRAIN_S):
                    await strategies_done.wait()
            finally:
                strategies_scope.cancel()
                side_out.close()  # the forwarder hands on the rest, then closes its store end

    def holdings_changed() -> None:  # the account book's positions: the HOLDING claims
        slots.set_positions(state.accounts.positions_by_code())

    def observe(ev: Event) -> None:
        slots.on_event(ev)  # every slot's data clock: trades, books, program trading, indexes
        router_progress.observe(ev)  # after the router applied it (notices to the book)
        host.offer(ev)

    def on_tick(t: Tick) -> Event | None:
        scanner.observe(t.code, t.received_ns / 1e9, t.price, t.trade_volume)
        move = detector.update(t.code, t.received_ns / 1e9, t.price)
        if move is None:
            return None
        alert = alert_from(move, t)
        to_redis(alert)
        return alert

    def refresh_scanner() -> None:
        top = [m.code for m in scanner.top(s.kis.scanner_slots, time.time())] \
            if s.kis.scanner_slots else []
        slots.set_scanner([*scanner_posted, *(c for c in top if c not in scanner_posted)])

    def status() -> dict[str, object]:
        return {
            "active_connections": len(hub.clients),
            "active_users": list(hub.users()),
            "subscriptions": hub.subscriptions(),
            "outboxes": {"queued": sum(len(c.outbox) for c in hub.clients.values()),
                         "conflated": hub.conflated_total()},
            "price_streamer_running": any(f.state == "streaming" for f in feeds),
            "upstream": [f.as_dict() for f in feeds],
            "queues": _channel_stats(("events", events_out), ("store", store_out)),
            "router": router_stats.as_dict(),
            "store": flusher_stats.as_dict(),
            "recorder": recorder_stats.__dict__ if record else None,
            "slots": slots.as_dict(),
            "positions": positions_stats.as_dict(),
            "side_events": dict(side_stats),
            "strategies": host.status(),
            "redis": {**redis_stats, **(bridge_stats.as_dict() if bridge_stats else {})},
            "market_gate": state.gate_state.level if state.gate_state else None,
            "uptime_s": round(time.time() - started_at, 3),
        }

    started_at = time.time()
    try:
        async with trio.open_nursery() as outer:
            kis_on_sim = s.sim.enabled and replay is None and not s.kis.ws_url
            if s.sim.enabled and replay is None:
                sim = await outer.start(run_simulator, s.sim)
                s = s.with_sim_urls(sim.rest_url, sim.ws_url, sim.ls_ws_url)
            kis_adapters, slots = _kis_sessions(s, feeds if replay is None else [], hub, audit,
                                                always_open=kis_on_sim)
            if earlier:
                slots.set_positions(state.accounts.positions_by_code())
                log.info("account book: %d notices from today replayed, %d codes held",
                         len(earlier), len(state.accounts.held_codes()))
            ctx = GatewayContext(hub=hub, auth=auth, latest=state.latest, status=status,
                                 engine=engine, ping_interval_s=g.ping_interval_s,
                                 max_missed_pongs=g.max_missed_pongs, settings=g,
                                 metrics=metrics, books=state.books, last=state.last,
                                 accounts=state.accounts, demand=slots,
                                 slots_summary=lambda admin: slots.summary(admin=admin))
            app = create_app(ctx)
            register_slots(app, slots, auth, scanner_posted, refresh_scanner, tuple(
                k for k in s.kis.pick_keys() if k[0] not in ("H0STCNT0", "H0STASP0")))
            register_signals(app, engine, auth, signals, lambda: sorted(state.latest))
            await outer.start(hub.run_cadence)
            if d.redis_url:
                from tradestream.redis_bridge import RedisStats, run_redis_bridge

                bridge_stats = RedisStats()
                await outer.start(partial(
                    run_redis_bridge, d.redis_url, redis_in, signals.from_redis,
                    subscribe=[d.redis_signal_channel], stats=bridge_stats))
            binds = await outer.start(partial(
                serve_app, app, g.host, g.port, graceful_s=g.graceful_s,
                max_message_bytes=g.max_message_bytes, write_timeout_s=g.send_timeout_s,
                on_write_timeout=metrics.closes.labels("send_timeout").inc))
            base = binds[0]
            async with trio.open_nursery() as draining:
                sink = ThreadedSink(EventWriter(engine).write)
                policy = FlushPolicy(max_rows=s.store.flush_rows,
                                     max_delay_s=s.store.flush_interval_s,
                                     memory_rows=s.store.memory_rows, drain_s=s.store.drain_s,
                                     final_write_s=s.store.final_write_s)
                spool = await trio.to_thread.run_sync(Spool, Path(s.store.spool_dir))
                await draining.start(partial(run_flusher, store_in, sink, policy, flusher_stats,
                                             spool, transient=transient))
                store_out_router = store_out.clone()
                await draining.start(_forward, side_in, store_out, side_stats)  # the original
                await draining.start(run_strategies)
                await draining.start(route)
                if record is not None:
                    await draining.start(run_recorder, frames_in, record, recorder_stats)
                else:
                    frames_in.close()
                async with trio.open_nursery() as intake:
                    with events_out, frames_out:  # our originals; each intake task holds clones
                        if replay is not None:
                            await intake.start(partial(run_replay, replay, events_out.clone(),
                                                       speed=replay_speed))
                        else:
                            if s.kis.positions_url and s.kis.positions_every_s:
                                # first answer before the feeds register: holdings included;
                                # bounded (POSITIONS_FETCH_TIMEOUT_S), so a slow source cannot
                                # hold the feeds back
                                await intake.start(partial(
                                    run_positions_sync,
                                    HttpPositions(s.kis.positions_url, s.kis.connect_timeout_s),
                                    state.accounts, holdings_changed,
                                    s.kis.positions_every_s, positions_stats,
                                    routed=router_progress.routed))
                            intake.start_soon(slots.run)
                            intake.start_soon(_run_scanner, refresh_scanner,
                                              s.kis.scanner_every_s)
                            await _start_feeds(intake, s, kis_adapters, feeds, events_out,
                                               frames_out if record is not None else None)
                    log.info("tradestream serving on %s", base)
                    task_status.started(Running(
                        url=base, ws_url=ws_url(base, "/api/ws"), stop=intake.cancel_scope.cancel,
                        hub=hub, auth=auth, sim=sim, feeds=feeds, slots=slots,
                        router=router_stats,
                        flusher=flusher_stats, state=state, metrics=metrics, side=side_stats,
                        positions=positions_stats,
                    ))
                log.info("intake stopped; draining the pipeline")
            log.info("pipeline drained: %d events received, %d stored in %d batches (%d of them "
                     "slot audits and signals, %d of those dropped)",
                     router_stats.events + side_stats["forwarded"], flusher_stats.rows,
                     flusher_stats.batches, side_stats["forwarded"], side_stats["dropped"])
            hub.close_all()
            with trio.move_on_after(CLIENT_CLOSE_WAIT_S):
                await hub.wait_empty()
            outer.cancel_scope.cancel()
    finally:
        engine.dispose()


STRATEGY_DRAIN_S = 3.0  # at a stop: strategies get this long for what they hold


async def _run_scanner(refresh: Callable[[], None], every_s: float) -> None:
    while True:
        await trio.sleep(every_s)
        refresh()


async def _forward(side_in: trio.MemoryReceiveChannel[Event],
                   out: trio.MemorySendChannel[Event], stats: dict[str, int], *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Hand side events (audits, signals) to the store until `side_in` ends. A hard stop
    ends it too: what is still queued is handed on without waiting, or counted as dropped."""
    with out, side_in:
        task_status.started()
        try:
            async for ev in side_in:
                await out.send(ev)
                stats["forwarded"] += 1
        except trio.BrokenResourceError:  # the flusher is gone (a hard stop)
            pass
        finally:
            while True:
                try:
                    ev = side_in.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                try:
                    out.send_nowait(ev)
                    stats["forwarded"] += 1
                except (trio.WouldBlock, trio.BrokenResourceError):
                    stats["dropped"] += 1


def _kis_sessions(s: Settings, feeds: list[FeedStatus], hub: Hub,
                  on_audit: Callable[[Audit], None], *, always_open: bool = False
                  ) -> tuple[list[KisAdapter], SlotDriver]:
    """The KIS sessions (one per app key) and the slot driver that decides what each of them
    registers. The execution notices ride on the first session (the driver moves them to a
    survivor if it is lost) and take one of its registrations. Stale slots are looked for
    during KRX/NXT hours (slots/hours.py), or at any time when `always_open` (the
    simulator)."""
    k = s.kis
    capacity = usable_capacity(k.registration_limit, 0, k.slot_margin)
    adapters: list[KisAdapter] = []
    sessions: list[SlotSession] = []
    prices, books = streamed_codes(s, kis=False)

    def dropped(r: Rejection) -> None:
        topic = topics.for_registration(r.tr_id, r.code)
        # the lost subscriptions end (hub.revoke): subscribing again is a new claim
        hub.revoke(topic, Msg(wire.error("slot_lost", f"{topic}: {r.reason}", topic),
                               "error"))

    holidays = frozenset(k.market_holidays)

    def market_open(tr_id: str) -> bool:
        return always_open or hours.market_open(tr_id, datetime.now(KST), holidays)

    driver: SlotDriver | None = None

    def desired(name: str) -> Callable[[], list[tuple[str, str]]]:
        return lambda: driver.registrations(name) if driver is not None else []

    for i, (key, secret) in enumerate(k.session_keys()):
        name = f"kis-{i + 1}"
        adapter = KisAdapter(k, name, app_key=key, app_secret=secret, desired=desired(name))
        status = FeedStatus(name=name)
        feeds.append(status)
        adapters.append(adapter)
        sessions.append(SlotSession(name, capacity, adapter, status))
    manager = SlotManager({x.name: capacity for x in sessions},
                          scanner_dwell_s=k.scanner_dwell_s, stale_s=k.slot_stale_s)
    driver = SlotDriver(manager, sessions, notice=k.notice_key(), static_prices=prices,
                        static_books=books, on_dropped=dropped, on_audit=on_audit,
                        lost_after_s=k.lost_after_s, market_open=market_open, clock=time.time,
                        max_demand_per_user=s.gateway.max_demand_per_user)
    driver.set_picks(k.pick_keys())
    if manager.pending():
        log.warning("%d configured registrations wait for a slot (capacity %d over %d "
                    "sessions)", len(manager.pending()),
                    sum(u.capacity for u in manager.usage().values()), len(sessions))
    return adapters, driver


_PRICE_TRS = {"H0STCNT0", "H0NXCNT0", "H0UNCNT0", "S3_", "K3_"}
_BOOK_TRS = {"H0STASP0", "H0NXASP0", "H0UNASP0", "H1_", "HA_"}


def streamed_codes(s: Settings, *, kis: bool = True) -> tuple[frozenset[str], frozenset[str]]:
    """Codes with trades, and codes with order books, registered upstream (by LS only, when
    not `kis`: those need no KIS slot)."""
    regs = (list(s.kis.registrations()) if kis else []) + (
        list(s.ls.subscriptions) if s.ls.enabled else [])
    return (frozenset(k for tr, k in regs if tr in _PRICE_TRS),
            frozenset(k for tr, k in regs if tr in _BOOK_TRS))


async def _start_feeds(
    intake: trio.Nursery,
    s: Settings,
    kis_adapters: list[KisAdapter],
    feeds: list[FeedStatus],
    events_out: trio.MemorySendChannel[Event],
    frames_out: trio.MemorySendChannel[Frame] | None,
) -> None:
    """Start the KIS sessions and, when enabled, one LS session in `intake`."""
    sessions: list[tuple[Any, FeedTiming, str, FeedStatus]] = [
        (a, kis_timing(s.kis), s.kis.rest_url, st) for a, st in zip(kis_adapters, feeds,
                                                                     strict=True)]
    if s.ls.enabled:
        ls_status = FeedStatus(name="ls-1")
        feeds.append(ls_status)
        sessions.append((LsAdapter(s.ls, "ls-1"), ls_timing(s.ls), s.ls.rest_url, ls_status))
    for adapter, timing, rest_url, status in sessions:
        await intake.start(partial(
            run_feed, adapter, events_out.clone(), status, timing, rest_url=rest_url,
            frames_out=frames_out.clone() if frames_out is not None else None))
