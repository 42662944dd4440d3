"""The ingest role: broker sessions, slots, the router, detectors, strategies and the store.

    run_ingest
      draining    flusher, side-event forwarder, strategies, router, recorder   end on EndOfChannel
        intake        positions sync, slot driver, scanner, feeds               ended by stop()
          feeds         one task per broker session                         drained by stop()
                      (or a replay, which ends by itself)

`stop()` drains the feeds: they register nothing more and read what is already in their sockets
until each has been quiet for FEED_QUIET_S (bounded by DRAIN_FEEDS_S), then close upstream with
1000 and their channel ends; once the feeds are done the rest of intake is cancelled. The
router drains, the strategies finish what they hold, the side edge closes; the
flusher writes the tail; run_ingest returns with every received event stored. Edges and their
back-pressure:

    feeds --events (block)--> router --events (block)--> flusher --> database
      \\--raw frames (block)--> recorder       \\--> hub (never waits: conflate / disconnect)
    slot audits, signals --side (drop and count)--> forwarder --> flusher
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

import trio
from sqlalchemy.engine import Connection, Engine

from tradestream.accounts import (
    AccountBook,
    HttpPositions,
    PositionsSource,
    RouterProgress,
    SyncStats,
    run_positions_sync,
)
from tradestream.config import KisSettings, Settings
from tradestream.detect.gate import MarketGate
from tradestream.detect.movers import MoverScanner
from tradestream.detect.sudden import SuddenMoveDetector
from tradestream.errors import ConfigError, SpoolUnusable
from tradestream.events import KST, Event, Execution, FeedGap
from tradestream.feeds.broker import FeedSession
from tradestream.feeds.credentials import Credentials, RedisCredentialStore
from tradestream.feeds.kis.rest import KIS_ACCESS, KisRest, TokenFile
from tradestream.feeds.record import Frame, RecorderStats, run_recorder, run_replay
from tradestream.feeds.registry import BROKERS
from tradestream.feeds.session import FeedControl, FeedStatus, run_feed
from tradestream.hub import Hub
from tradestream.pipeline.backfill import Backfiller
from tradestream.pipeline.canon import TradeCanon
from tradestream.pipeline.detection import TickDetectors
from tradestream.pipeline.publish import AlertsOut, SignalPublisher, StrategyEmitter, revoke_slot
from tradestream.pipeline.routing import StrategyStage, run_routing
from tradestream.pipeline.session import calendar_from_broker, run_session_clock
from tradestream.pipeline.side import SideEvents, run_forwarder
from tradestream.pipeline.stages import MarketState, RouterStats
from tradestream.roles.daily import DailyStats, run_daily_bars
from tradestream.roles.scans import run_scheduled_scans
from tradestream.roles.sources import KisBalancePositions
from tradestream.roles.stocks import run_stock_master
from tradestream.session_calendar import Calendar, SpecialDay
from tradestream.slots.driver import SlotDriver
from tradestream.slots.market_movers import Find, MoverStats, run_market_movers
from tradestream.slots.picks import pick_keys
from tradestream.slots.scanner import ScannerSlots
from tradestream.slots.schedule import run_scheduled_picks
from tradestream.slots.setup import MarketHours, build_slot_driver
from tradestream.store import migrate, reads
from tradestream.store.flusher import FlusherStats, FlushPolicy, ThreadedSink, run_flusher
from tradestream.store.journal import Journal
from tradestream.store.runmark import BEAT_S, RunMark
from tradestream.store.spool import Spool
from tradestream.store.stocks import load_names
from tradestream.store.writer import EventWriter, make_engine, transient
from tradestream.strategies import Strategy, StrategyHost
from tradestream.strategies.loader import build_strategies
from tradestream.upstream import INDEX_NAMES, KIS_BOOK, KIS_TRADES, TRADE_TRS

log = logging.getLogger("tradestream.service")

REDIS_OUT_BUFFER = 1000  # alerts queued for Redis before they are dropped (and counted)
# At a stop the feeds read on until their sockets have been quiet this long (what the broker
# sent before the stop is taken and stored) ...
FEED_QUIET_S = 0.2
# ... and the intake ends within this, whatever the feeds are doing
DRAIN_FEEDS_S = 2.0


@dataclass
class Ingest:
    """What run_ingest hands its caller once the intake runs: the controls and the state the
    gateway reads, and the stats the status document shows (roles/status.py)."""

    stop: Callable[[], None]
    engine: Engine
    state: MarketState
    feeds: list[FeedStatus]
    slots: SlotDriver
    scanner: ScannerSlots
    signals: SignalPublisher
    strategies: StrategyHost
    router: RouterStats
    flusher: FlusherStats
    recorder: RecorderStats | None
    side: dict[str, int]  # slot audits and signals to the store: forwarded, dropped
    positions: SyncStats
    queues: dict[str, trio.MemorySendChannel[Event]]
    alerts_out: AlertsOut | None  # alerts to Redis, when configured
    redis: Any  # the Redis bridge's RedisStats, when configured
    kept_picks: tuple[tuple[str, str], ...]  # configured picks a PUT of trades/books keeps
    journal: Journal | None = None  # the intake journal (live intake only)
    market_movers: MoverStats | None = None  # the broker's rankings' finds
    backfill: Backfiller | None = None  # feed gaps filled from the broker's minute bars
    daily_bars: DailyStats | None = None  # the broker's daily bars, cached for the VCP scan
    credentials: Credentials | None = None  # the process's broker credentials
    started_at: float = field(default_factory=time.time)


@dataclass
class _Parts:
    """The ingest's parts before any task runs, wired to each other (`_assemble`)."""

    state: MarketState
    sessions: list[FeedSession]  # the upstream sessions to run (none for a replay)
    slots: SlotDriver
    scanner: ScannerSlots
    detectors: TickDetectors
    signals: SignalPublisher
    strategies: StrategyHost
    side: SideEvents
    progress: RouterProgress
    alerts_out: AlertsOut | None
    always_open: bool = False  # the simulator: its market never closes
    backfill: Backfiller | None = None  # set once the REST client exists (live intake)
    hours: MarketHours | None = None  # the slots' market hours (its calendar replaced later)
    canon: TradeCanon | None = None  # two brokers may stream a code: one trade stream each
    credentials: Credentials | None = None  # the process's, shared by the feeds and REST

    def holdings_changed(self, _: object = None) -> None:
        """The account book's positions are the slots' HOLDING claims."""
        self.slots.set_positions(self.state.accounts.positions_by_code())

    def slot_codes(self) -> list[str]:
        """The codes whose trades have a slot (the daily bars' codes)."""
        return sorted({r.code for r in self.slots.manager.slots() if r.tr_id in TRADE_TRS})

    def observe(self, ev: Event) -> None:
        """Every event, after the router applied it; none of these blocks."""
        self.slots.on_event(ev)  # every slot's data clock
        self.progress.observe(ev)  # positions answers wait behind notices (accounts.py)
        self.strategies.offer(ev)
        if self.backfill is not None and type(ev) is FeedGap and ev.source in self.slots.sessions:
            self.backfill.request(ev)  # a KIS session's lost minutes, from the broker


TAKEOVER = "ingest takeover: the previous ingest died without handing over"


async def open_store(s: Settings) -> tuple[Engine, MarketState]:
    """The engine, migrated or checked, and the market state with the day's orders and fills
    so far: the account book (get_account, holdings) survives a restart. Positions older than
    today come from the broker, not from here."""
    engine = make_engine(s.store.url)
    if s.store.auto_upgrade:
        await trio.to_thread.run_sync(migrate.upgrade, engine)
    await trio.to_thread.run_sync(migrate.check, engine)
    today = datetime.now(KST).replace(hour=0, minute=0, second=0, microsecond=0)
    state = MarketState(gate=_gate(s))
    for ex in await trio.to_thread.run_sync(reads.executions_since, engine, today):
        state.accounts.apply(ex)
    state.names.update({code: name.upper() for code, name in INDEX_NAMES.items()})
    state.names.update(await trio.to_thread.run_sync(load_names, engine))
    return engine, state


async def run_ingest(
    s: Settings,
    hub: Hub,
    *,
    record: Path | None = None,
    replay: Path | None = None,
    replay_speed: float = 0.0,
    strategies: Sequence[Strategy] | None = None,
    always_open: bool = False,
    store: tuple[Engine, MarketState] | None = None,
    takeover: datetime | None = None,
    write_guard: Callable[[Connection], None] | None = None,
    task_status: trio.TaskStatus[Ingest] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Take in the brokers' data until stop() is called, publish it to `hub` and store it.

    `strategies` replaces the shipped ones (the news keyword strategy). With `record`, every
    raw upstream frame is appended to that file. With `replay`, a recording is the intake
    instead of the feeds; run_ingest then drains and returns by itself when it ends.
    `always_open`: look for stale slots at any hour (the simulator trades around the clock).
    `store`: `open_store(s)`'s result when the caller opened it (it then disposes of the
    engine); else run_ingest opens it, so SchemaOutOfDate comes out of this task.
    `takeover`: this process took the ingest lease over from one that died (last heard of
    then): the feeds report the time since as a feed gap. `write_guard`: runs first in every
    batch's transaction (the lease's fence, store/fence.py).

    started(): the intake is running; returns `Ingest`. Returns once every received event is
    stored.
    """
    engine, state = store if store is not None else await open_store(s)
    # the process's broker credentials and the KIS REST client, shared by every REST use of
    # the tree; closed last
    creds = process_credentials(s)
    rest = kis_rest(s.kis, creds) if replay is None and s.kis.rest_url else None
    try:
        redis_out, redis_in = trio.open_memory_channel[tuple[str, bytes]](REDIS_OUT_BUFFER)
        events_out, events_in = trio.open_memory_channel[Event](s.pipeline.tick_buffer)  # block
        parts = _assemble(
            s,
            hub,
            state,
            redis_out,
            events_out,
            replay=replay,
            strategies=strategies,
            always_open=always_open,
            credentials=creds,
        )
        await _run_tree(
            s,
            hub,
            engine,
            parts,
            events_out,
            events_in,
            redis_in,
            record,
            replay,
            replay_speed,
            task_status,
            rest,
            takeover=takeover,
            write_guard=write_guard,
        )
    finally:
        if rest is not None:
            await rest.aclose()
        await creds.aclose()
        if store is None:
            engine.dispose()


def _assemble(
    s: Settings,
    hub: Hub,
    state: MarketState,
    redis_out: trio.MemorySendChannel[tuple[str, bytes]],
    events_out: trio.MemorySendChannel[Event],
    *,
    replay: Path | None,
    strategies: Sequence[Strategy] | None,
    always_open: bool,
    credentials: Credentials | None = None,
) -> _Parts:
    """Build the parts and wire them: no task runs yet."""
    d = s.detect
    side = SideEvents()
    live = [] if replay is not None else BROKERS.values()
    sessions = [fs for b in live for fs in b.make_sessions(s, credentials)]
    slotted = [fs for fs in sessions if BROKERS[fs.adapter.broker].slotted]
    if replay is not None:
        # nothing registers upstream, but the driver still answers the gateway's demand
        slotted = [fs for b in BROKERS.values() if b.slotted for fs in b.sessions(s)]
    market_hours = MarketHours(
        Calendar(holidays=frozenset(s.kis.market_holidays)), always_open=always_open
    )  # the broker's calendar replaces it once known (_run_tree)
    slots = build_slot_driver(
        s,
        slotted,
        on_audit=side.put,
        on_dropped=lambda r: revoke_slot(hub, r.tr_id, r.code, r.reason),
        hours_=market_hours,
    )
    movers = MoverScanner()
    alerts_out = AlertsOut(d.redis_alert_channel, redis_out) if d.redis_url else None
    parts = _Parts(
        state=state,
        sessions=sessions,
        slots=slots,
        scanner=ScannerSlots(slots, movers, s.kis.scanner_slots),
        detectors=TickDetectors(
            SuddenMoveDetector(window_s=d.window_s, threshold=d.threshold, debounce_s=d.debounce_s),
            movers,
            on_alert=alerts_out,
        ),
        signals=SignalPublisher(hub, side.put, state.name),
        strategies=StrategyHost(
            list(strategies)
            if strategies is not None
            else build_strategies(d.strategies, prices=state.latest, names=state.names),
            StrategyEmitter(hub, side.put),
        ),
        side=side,
        progress=RouterProgress(events_out),
        alerts_out=alerts_out,
        always_open=always_open,
        hours=market_hours,
        canon=TradeCanon() if len({ss.broker for ss in slots.sessions.values()}) > 1 else None,
        credentials=credentials,
    )
    if state.accounts.held_codes():  # today's notices, replayed from the store
        parts.holdings_changed()
        log.info("account book: %d codes held", len(state.accounts.held_codes()))
    return parts


async def _run_tree(
    s: Settings,
    hub: Hub,
    engine: Engine,
    parts: _Parts,
    events_out: trio.MemorySendChannel[Event],
    events_in: trio.MemoryReceiveChannel[Event],
    redis_in: trio.MemoryReceiveChannel[tuple[str, bytes]],
    record: Path | None,
    replay: Path | None,
    replay_speed: float,
    task_status: trio.TaskStatus[Ingest],
    rest: KisRest | None,
    *,
    takeover: datetime | None = None,
    write_guard: Callable[[Connection], None] | None = None,
) -> None:
    """The tree of the module docstring; `rest` the KIS REST client it shares."""
    p, k = parts, s.kis
    if rest is not None and k.backfill:
        p.backfill = Backfiller(
            rest,
            lambda session: [c for tr, c in p.slots.registrations(session) if tr in TRADE_TRS],
            always_open=p.always_open,
            holidays=frozenset(k.market_holidays),
        )
    store_out, store_in = trio.open_memory_channel[Event](s.pipeline.store_buffer)  # block
    frames_out, frames_in = trio.open_memory_channel[Frame](s.pipeline.tick_buffer)  # block
    router, flusher, positions = RouterStats(), FlusherStats(), SyncStats()
    movers = MoverStats()
    daily = DailyStats()
    recorder = RecorderStats() if record is not None else None
    bridge = None
    async with trio.open_nursery() as outer:  # the Redis bridge: cancelled once drained
        if s.detect.redis_url:
            from tradestream.redis_bridge import RedisStats, run_redis_bridge

            bridge = RedisStats()
            await outer.start(
                partial(
                    run_redis_bridge,
                    s.detect.redis_url,
                    redis_in,
                    p.signals.from_redis,
                    subscribe=[s.detect.redis_signal_channel],
                    stats=bridge,
                )
            )
        async with trio.open_nursery() as draining:
            spool = await trio.to_thread.run_sync(Spool, Path(s.store.spool_dir))
            mark = RunMark(Path(s.store.spool_dir)) if replay is None else None
            unclean = await trio.to_thread.run_sync(mark.previous) if mark else None
            gap_reason = ""
            if takeover is not None and (unclean is None or takeover < unclean):
                unclean, gap_reason = takeover, TAKEOVER
                log.warning(
                    "took the ingest lease over (the previous ingest was last heard of %s): "
                    "the feeds report the downtime as a feed gap",
                    takeover.isoformat(timespec="seconds"),
                )
            elif unclean is not None:
                log.warning(
                    "the previous run did not stop cleanly (last alive %s): the feeds report "
                    "the downtime as a feed gap",
                    unclean.isoformat(timespec="seconds"),
                )
            journal = await _open_journal(s, spool, p.state.accounts) if mark is not None else None
            if journal is not None:
                if p.state.accounts.held_codes():
                    p.holdings_changed()  # with the notices the journal gave back
                p.side.journal = journal.record
            await draining.start(
                partial(
                    run_flusher,
                    store_in,
                    ThreadedSink(
                        EventWriter(engine, guard=write_guard).write,
                        timeout_s=s.store.write_timeout_s,
                    ),
                    FlushPolicy.from_settings(s.store),
                    flusher,
                    spool,
                    transient=transient,
                    settled=journal.settled if journal is not None else None,
                )
            )
            stage = StrategyStage(p.strategies)
            await draining.start(run_forwarder, p.side, store_out.clone())
            await draining.start(stage.run)
            await draining.start(
                partial(
                    run_routing,
                    events_in,
                    store_out,
                    hub,
                    p.state,
                    router,
                    strategies=stage,
                    side=p.side,
                    on_holding=p.holdings_changed,
                    on_tick=p.detectors,
                    observe=p.observe,
                    journal=journal.record if journal is not None else None,
                    canon=p.canon,
                )
            )
            if recorder is not None and record is not None:
                await draining.start(run_recorder, frames_in, record, recorder)
            else:
                frames_in.close()
            controls: list[FeedControl] = []
            async with trio.open_nursery() as intake:
                with events_out, frames_out:  # originals; intake tasks hold clones
                    if replay is not None:
                        await intake.start(
                            partial(run_replay, replay, events_out.clone(), speed=replay_speed)
                        )
                    else:
                        if k.master_url:
                            await intake.start(
                                run_stock_master, engine, k.master_url, p.state.names
                            )
                        source = _positions_source(k, rest, p.state.names)
                        if source is not None and k.positions_every_s:
                            # first answer before the feeds register: holdings included; bounded
                            # (POSITIONS_FETCH_TIMEOUT_S), so a slow source cannot hold them back
                            await intake.start(
                                partial(
                                    run_positions_sync,
                                    source,
                                    p.state.accounts,
                                    p.holdings_changed,
                                    k.positions_every_s,
                                    positions,
                                    routed=p.progress.routed,
                                )
                            )
                        if mark is not None:
                            await trio.to_thread.run_sync(mark.beat)
                            intake.start_soon(_keep_marked, mark)
                        intake.start_soon(p.slots.run, events_out.clone())  # failover gaps
                        real = rest if rest is not None and not k.paper else None
                        cal = await calendar_from_broker(
                            real.market_days if real is not None else None,
                            k.market_holidays,
                            datetime.now(KST).date(),
                            engine=engine,
                            special={
                                d: SpecialDay(o, c, "configured")
                                for d, o, c in k.market_special_days
                            },  # fmt: skip
                        )
                        p.detectors.auction_print = cal.auction_print
                        if p.hours is not None:  # stale slots by the broker's calendar too
                            p.hours.calendar = cal
                        if k.picks_source:
                            kept = _kept_picks(k)
                            await intake.start(
                                partial(
                                    run_scheduled_picks,
                                    k.picks_source,
                                    k.picks_at,
                                    cal.holidays,  # the broker's too
                                    lambda picks: p.slots.set_picks(
                                        pick_keys(picks, kept, KIS_TRADES, KIS_BOOK)
                                    ),
                                )
                            )
                        await intake.start(p.scanner.run, k.scanner_every_s)
                        await intake.start(run_session_clock, cal, hub, p.state)
                        if p.backfill is not None:
                            await intake.start(p.backfill.run, events_out.clone())
                        if rest is not None and k.daily_bars:
                            await intake.start(run_daily_bars, rest, engine, p.slot_codes, daily)
                        if s.detect.scan_every_s:
                            await intake.start(
                                run_scheduled_scans,
                                engine,
                                p.signals.publish,
                                p.state.traded_codes,
                                s.detect.scan_every_s,
                                lambda: p.slots.is_market_open(KIS_TRADES),
                            )
                        if rest is not None and k.market_movers_every_s and k.scanner_slots:
                            await intake.start(
                                partial(
                                    run_market_movers,
                                    rest,
                                    partial(_found, p.scanner.set_market, p.state.names),
                                    lambda code: p.slots.watched(KIS_TRADES, code),
                                    every_s=k.market_movers_every_s,
                                    n=k.scanner_slots,
                                    min_change_pct=k.market_movers_min_pct,
                                    market_open=lambda: p.slots.is_market_open(KIS_TRADES),
                                    stats=movers,
                                )
                            )
                        await _start_feeds(
                            intake,
                            p.sessions,
                            events_out,
                            frames_out if recorder is not None else None,
                            controls,
                            unclean,
                            journal.record if journal is not None else None,
                            gap_reason,
                        )
                task_status.started(
                    Ingest(
                        stop=_stopper(intake.cancel_scope, controls),
                        engine=engine,
                        state=p.state,
                        feeds=[fs.status for fs in p.sessions],
                        slots=p.slots,
                        scanner=p.scanner,
                        signals=p.signals,
                        strategies=p.strategies,
                        router=router,
                        flusher=flusher,
                        recorder=recorder,
                        side=p.side.stats,
                        positions=positions,
                        queues={"events": events_out, "store": store_out},
                        alerts_out=p.alerts_out,
                        redis=bridge,
                        kept_picks=_kept_picks(k),
                        journal=journal,
                        market_movers=movers,
                        backfill=p.backfill,
                        daily_bars=daily,
                        credentials=p.credentials,
                    )
                )
            log.info("intake stopped; draining the pipeline")
        outer.cancel_scope.cancel()
    side = p.side.stats
    log.info(
        "pipeline drained: %d events received, %d stored in %d batches (%d of them slot "
        "audits and signals, %d of those dropped)",
        router.events + side["forwarded"],
        flusher.rows,
        flusher.batches,
        side["forwarded"],
        side["dropped"],
    )
    if journal is not None:
        left = journal.close()
        if left:
            log.warning("journal: %d events not stored are kept for the next start", left)
    if mark is not None:
        await trio.to_thread.run_sync(mark.clear)  # a clean stop: no gap at the next start


async def _open_journal(s: Settings, spool: Spool, accounts: AccountBook) -> Journal | None:
    """The intake journal (store/journal.py) under the spool, with what an unclean stop left
    in it moved to the spool first (the flusher replays that before anything new). Today's
    execution notices among it go to the account book too: it was read from the store before
    they are written (notices it already has are known by their keys and skipped)."""
    if not s.store.journal:
        return None
    where = Path(s.store.spool_dir) / "journal"
    notices: list[Execution] = []

    def keep(events: list[Event]) -> None:
        spool.append(events)
        notices.extend(e for e in events if isinstance(e, Execution))

    try:
        journal = await trio.to_thread.run_sync(Journal, where)
        kept = await trio.to_thread.run_sync(journal.take_leftovers, keep)
    except OSError as exc:
        raise SpoolUnusable(str(where), exc.strerror or str(exc)) from None
    today = datetime.now(KST).date()
    for ex in notices:
        if ex.time.astimezone(KST).date() == today:
            accounts.apply(ex)
    if kept:
        log.warning(
            "journal: %d events the previous run had taken in go to the store (those already "
            "stored are not stored twice)",
            kept,
        )
    return journal


def _gate(s: Settings) -> MarketGate:
    """The market gate with the configured thresholds (TRADESTREAM_MARKET_GATE)."""
    params = dict(s.detect.gate)
    if "confirm_updates" in params:
        params["confirm_updates"] = int(params["confirm_updates"])
    try:
        return MarketGate(**params)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"TRADESTREAM_MARKET_GATE: {exc}") from None


def process_credentials(s: Settings) -> Credentials:
    """Every broker credential of the process (feeds/credentials.py): kept in the KIS token file
    across restarts and, in cluster mode (TRADESTREAM_REDIS_URL), shared through Redis by the
    processes of the stream."""
    shared = None
    if s.detect.redis_url:
        from tradestream.redis_bridge import redis_client  # the redis extra

        connect = partial(redis_client, s.detect.redis_url)
        shared = RedisCredentialStore(connect, prefix=f"tradestream:credential:{s.redis_stream}")
    token_file = Path(s.kis.token_file) if s.kis.token_file else None
    return Credentials(token_file=token_file, shared=shared, timeout_s=s.kis.connect_timeout_s)


def kis_rest(k: KisSettings, credentials: Credentials | None = None) -> KisRest:
    """The REST client of the first app key (the account's), shared by every REST use; its
    token is the app key's credential in `credentials` (else a credential of its own)."""
    return KisRest(
        k.rest_url,
        k.app_key,
        k.app_secret,
        credential=(
            credentials.credential(KIS_ACCESS, k.app_key, k.app_secret, k.rest_url)
            if credentials is not None
            else None
        ),
        token_file=TokenFile(Path(k.token_file)) if k.token_file else None,
        rate_per_s=k.rest_rate_per_s,
        paper=k.paper,
        custtype=k.custtype,
        timeout_s=k.connect_timeout_s,
    )


def _positions_source(
    k: KisSettings, rest: KisRest | None, names: dict[str, str]
) -> PositionsSource | None:
    """`TRADESTREAM_POSITIONS_URL` if set, else the account's balance inquiry (whose names
    join `names` for codes the master lacks), else none."""
    if k.positions_url:
        return HttpPositions(k.positions_url, k.connect_timeout_s)
    if k.account and rest is not None:
        return KisBalancePositions(rest, k.account, on_names=partial(_learn, names))
    return None


def _learn(names: dict[str, str], found: dict[str, str]) -> None:
    """Names from the broker's answers, for codes the master does not name."""
    for code, name in found.items():
        names.setdefault(code, name)


def _found(apply: Callable[[list[Find]], None], names: dict[str, str], finds: list[Find]) -> None:
    _learn(names, {f.code: f.name for f in finds if f.name})
    apply(finds)


def _kept_picks(k: KisSettings) -> tuple[tuple[str, str], ...]:
    """Configured picks that are neither trades nor order books (indexes, program trading):
    a new set of daily picks keeps them."""
    return tuple(key for key in k.pick_keys() if key[0] not in (KIS_TRADES, KIS_BOOK))


async def _keep_marked(mark: RunMark) -> None:
    """Rewrite the run mark every BEAT_S while intake runs (its time bounds a crash's gap).
    A mark that cannot be written costs only the gap record of a crash: said, never fatal."""
    failing = False
    while True:
        await trio.sleep(BEAT_S)
        try:
            await trio.to_thread.run_sync(mark.beat)
        except OSError as exc:
            if not failing:
                log.warning(
                    "run mark %s cannot be written (%s): a crash now would leave no gap record",
                    mark.path,
                    exc,
                )
            failing = True
        else:
            failing = False


async def _start_feeds(
    intake: trio.Nursery,
    sessions: Sequence[FeedSession],
    events_out: trio.MemorySendChannel[Event],
    frames_out: trio.MemorySendChannel[Frame] | None,
    controls: list[FeedControl],
    lost_since: datetime | None = None,
    journal: Callable[[list[Event]], None] | None = None,
    gap_reason: str = "",
) -> None:
    """Start the sessions in a nursery of their own inside `intake` (a task per session, each
    holding its own clones, drained through `controls`); once they have all returned (drained
    at a stop), the rest of the intake is cancelled too."""

    if not sessions:
        return  # nothing to drain: stop() cancels intake at once

    async def feeds(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for fs in sessions:
                control = FeedControl()
                controls.append(control)
                await nursery.start(
                    partial(
                        run_feed,
                        fs.adapter,
                        events_out.clone(),
                        fs.status,
                        fs.timing,
                        rest_url=fs.rest_url,
                        frames_out=frames_out.clone() if frames_out is not None else None,
                        control=control,
                        lost_since=lost_since,
                        gap_reason=gap_reason,
                        journal=journal,
                    )
                )
            task_status.started()
        intake.cancel_scope.cancel()  # every feed drained: nothing more comes in

    await intake.start(feeds)


def _stopper(intake: trio.CancelScope, controls: list[FeedControl]) -> Callable[[], None]:
    """Ingest.stop: drain the feeds (what reached their sockets is read and routed), bounded
    by DRAIN_FEEDS_S; without feeds (a replay), stop at once."""

    def stop() -> None:
        if not controls:
            intake.cancel()
            return
        for control in controls:
            control.drain(FEED_QUIET_S)
        intake.deadline = min(intake.deadline, trio.current_time() + DRAIN_FEEDS_S)

    return stop
