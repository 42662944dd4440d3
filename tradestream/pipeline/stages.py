"""Pipeline stages: the async wrappers between the feeds, the hub and the store."""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import trio

from tradestream import topics, wire
from tradestream.accounts import AccountBook, HoldingChange
from tradestream.detect.gate import GateState, MarketGate
from tradestream.detect.sudden import SuddenMove
from tradestream.events import (
    KST,
    Alert,
    Event,
    Execution,
    FeedGap,
    IndexTick,
    News,
    OrderBook,
    Tick,
)
from tradestream.hub import Hub, Msg
from tradestream.pipeline.canon import TradeCanon

DRAIN_MAX = 1024  # events taken from the channel per wake-up
LAG_SAMPLES = 4096  # intake-lag samples kept for the status endpoint


@dataclass
class RouterStats:
    ticks: int = 0
    events: int = 0
    published: int = 0  # events that had at least one subscriber (and so were encoded)
    by_type: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    # trades another session had passed on already (pipeline/canon.py), by source
    duplicates: Counter[str] = field(default_factory=Counter)
    # intake lag: upstream receive (a frame read off its socket) to the router taking the
    # event, for the oldest event of each drained batch; the most recent LAG_SAMPLES
    lag_ns: deque[int] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES))

    def intake_lag_ms(self) -> dict[str, float | int | None]:
        lags = sorted(self.lag_ns)
        if not lags:
            return {"samples": 0, "p50": None, "p99": None, "max": None}

        def at(q: float) -> float:
            return round(lags[min(len(lags) - 1, int(q * len(lags)))] / 1e6, 3)

        return {"samples": len(lags), "p50": at(0.5), "p99": at(0.99), "max": at(1.0)}

    def as_dict(self) -> dict[str, object]:
        return {
            "events": self.events,
            "ticks": self.ticks,
            "published": self.published,
            "by_type": dict(self.by_type),
            "by_source": dict(self.by_source),
            "duplicate_trades": dict(self.duplicates),
            "intake_lag_ms": self.intake_lag_ms(),
        }


@dataclass
class MarketState:
    """What the router knows right now; read by the gateway for snapshots and requests."""

    latest: dict[str, Tick] = field(default_factory=dict)  # latest trade per code
    books: dict[str, OrderBook] = field(default_factory=dict)  # latest order book per code
    last: dict[str, Msg] = field(default_factory=dict)  # latest message of index/gate topics
    accounts: AccountBook = field(default_factory=AccountBook)
    indexes: dict[str, IndexTick] = field(default_factory=dict)  # latest per index name
    gate: MarketGate = field(default_factory=MarketGate)
    gate_state: GateState | None = None
    names: dict[str, str] = field(default_factory=dict)  # code -> name (the stock master)

    # -- what the gateway reads (gateway/ports.py, MarketView) ---------------------------------
    def tick(self, code: str) -> Tick | None:
        return self.latest.get(code)

    def book(self, code: str) -> OrderBook | None:
        return self.books.get(code)

    def last_message(self, topic: str) -> Msg | None:
        return self.last.get(topic)

    def account_snapshot(self, accounts: Iterable[str]) -> dict[str, Any]:
        return self.accounts.snapshot(accounts)

    def account_names(self) -> list[str]:
        return self.accounts.accounts()

    def name(self, code: str) -> str:
        """The code's name from the stock master ("" if unknown)."""
        return self.names.get(code, "")

    def traded_codes(self) -> list[str]:
        """Codes with a trade seen, sorted (what the scans read)."""
        return sorted(self.latest)


def alert_from(move: SuddenMove, tick: Tick) -> Alert:
    pct = round(move.change * 100, 2)
    return Alert(
        "sudden-move",
        move.code,
        "sudden_move",
        move.direction,
        pct,
        move.price,
        move.reference_price,
        move.window_s,
        tick.trade_time,
        f"{move.code} {pct:+.2f}% from {move.reference_price:,} within {move.window_s:g}s",
        tick.received_ns,
    )


def alert_data(a: Alert) -> dict[str, object]:
    return {
        "kind": a.kind,
        "direction": a.direction,
        "change_percent": a.change_percent,
        "price": a.price,
        "reference_price": a.reference_price,
        "window_s": a.window_s,
        "triggered_at": a.triggered_at.isoformat(),
        "message": a.message,
        "received_ns": a.received_ns,
    }  # the trade's upstream receive time (epoch ns)


def gate_data(g: GateState, at: datetime) -> dict[str, object]:
    return {
        "status": g.level,
        "level": g.color,
        "kospi": g.kospi_pct,
        "kosdaq": g.kosdaq_pct,
        "advancers": g.advancers,
        "decliners": g.decliners,
        "breadth": None if g.breadth is None else round(g.breadth, 4),
        "reasons": list(g.reasons),
        "timestamp": at.isoformat(),
    }


async def run_router(
    events_in: trio.MemoryReceiveChannel[Event],
    store_out: trio.MemorySendChannel[Event],
    hub: Hub,
    state: MarketState,
    stats: RouterStats,
    *,
    on_holding: Callable[[HoldingChange], None] | None = None,
    on_tick: Callable[[Tick], Event | None] | None = None,
    observe: Callable[[Event], None] | None = None,
    journal: Callable[[list[Event]], None] | None = None,
    canon: TradeCanon | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send each event to the store, and to the gateway clients that asked for it.

    Owns `events_in` and `store_out`; returns when `events_in` is closed and drained, closing
    `store_out` so the flusher finishes next. The store edge blocks (lossless); the hub never
    blocks (it conflates or disconnects per client). An event is encoded only if someone
    watches one of its topics, and then once for all of them. `journal` is given the events
    the router derives (alerts) before they go on. `canon`: two brokers may stream a code;
    a trade already passed on goes nowhere (pipeline/canon.py).
    """
    has = hub.has_subscribers
    if canon is not None:
        stats.duplicates = canon.dropped  # counted where they are found
    with events_in, store_out:
        task_status.started()
        while True:
            # Take everything already queued before yielding: publishing a burst in one go lets
            # the outboxes conflate and coalesce it, where one event per scheduler pass would
            # hand the clients one frame each and leave the backlog in the channel.
            try:
                batch = [await events_in.receive()]
            except trio.EndOfChannel:
                return
            try:
                while len(batch) < DRAIN_MAX:
                    batch.append(events_in.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                pass
            received_ns = getattr(batch[0], "received_ns", 0)  # FeedGap has none
            if received_ns:
                stats.lag_ns.append(time.time_ns() - received_ns)
            if canon is not None:
                kept = [ev for ev in batch if type(ev) is not Tick or canon.accept(ev)]
                if len(kept) != len(batch):
                    batch = kept
            derived: list[Event] = []
            for ev in batch:
                _route(ev, hub, has, state, stats, on_holding)
                if observe is not None:
                    observe(ev)  # strategies: never blocks (their inputs drop when full)
                if on_tick is not None and type(ev) is Tick:
                    # the slot manager's data clock, the scanner, the detector (an alert)
                    found = on_tick(ev)
                    if found is not None:
                        _route(found, hub, has, state, stats, on_holding)
                        derived.append(found)
            if derived:
                if journal is not None:
                    journal(derived)
                batch += derived
            for ev in batch:
                try:
                    store_out.send_nowait(ev)
                except trio.WouldBlock:
                    await store_out.send(ev)  # the store is behind: block (lossless)
                except trio.BrokenResourceError:
                    # The flusher is gone: in a hard stop, the cancel arriving here is the
                    # answer (not a crash report); otherwise it is a real error.
                    await trio.lowlevel.checkpoint()
                    raise


def _route(
    ev: Event,
    hub: Hub,
    has: Callable[[str], bool],
    state: MarketState,
    stats: RouterStats,
    on_holding: Callable[[HoldingChange], None] | None,
) -> None:
    kept = hub.history is not None  # lossless messages are kept even with no one watching
    stats.events += 1
    stats.by_type[type(ev).__name__] += 1
    stats.by_source[ev.source] += 1
    if isinstance(ev, Tick):
        stats.ticks += 1
        state.latest[ev.code] = ev
        topic = topics.price(ev.code)
        if has(topic):
            hub.publish_latest(topic, Msg(wire.price_update(ev), "price_update", ev.received_ns))
            stats.published += 1
    elif isinstance(ev, OrderBook):
        state.books[ev.code] = ev
        topic = topics.orderbook(ev.code)
        if has(topic):
            hub.publish_latest(
                topic, Msg(wire.orderbook_update(ev), "orderbook_update", ev.received_ns)
            )
            stats.published += 1
    elif isinstance(ev, Execution):
        order, change = state.accounts.apply(ev)
        keys = topics.order_keys(ev.account, ev.order_no)
        if kept or any(has(k) for k in keys):
            msg = Msg(wire.order_update(ev, order.as_dict()), "order_update", ev.received_ns)
            for k in keys:
                hub.publish(k, msg)
            stats.published += 1
        if change is not None and on_holding is not None:
            on_holding(change)
    elif isinstance(ev, News):
        names = [topics.NEWS, *dict.fromkeys(topics.news(t) for t in ev.tickers)]
        if kept or any(has(t) for t in names):
            msg = Msg(wire.news(ev), "news", ev.received_ns)
            for t in names:
                hub.publish(t, msg)
            stats.published += 1
    elif isinstance(ev, IndexTick):
        _index(ev, hub, state)
    elif isinstance(ev, Alert):
        pair = (topics.ALERTS, topics.alert(ev.code))
        if kept or has(pair[0]) or has(pair[1]):
            msg = Msg(wire.alert(ev.code, alert_data(ev)), "alert", ev.received_ns)
            for t in pair:
                hub.publish(t, msg)
            stats.published += 1
    elif isinstance(ev, FeedGap):
        hub.broadcast(Msg(wire.feed_gap(ev), "feed_gap"))  # silence is not a quiet market


def _index(ev: IndexTick, hub: Hub, state: MarketState) -> None:
    """`market:{index}` gets every update (conflated); `market-gate` a new state when the
    gate's level changes (detect/gate.py), from KOSPI and KOSDAQ change and breadth."""
    previous = state.indexes.get(ev.index)
    state.indexes[ev.index] = ev
    topic = topics.market(ev.index)
    msg = Msg(
        wire.index_update(
            ev.index,
            {
                "code": ev.code,
                "value": ev.value,
                "change": ev.change,
                "change_percent": ev.change_percent,
                "volume": ev.volume,
                "traded_value": ev.traded_value,
                "advancers": ev.advancers,
                "decliners": ev.decliners,
                "unchanged": ev.unchanged,
                "timestamp": ev.time.isoformat(),
            },
        ),
        "index_update",
        ev.received_ns,
    )
    state.last[topic] = msg
    hub.publish_latest(topic, msg)
    kospi, kosdaq = state.indexes.get("kospi"), state.indexes.get("kosdaq")
    if kospi is None or kosdaq is None:
        return
    try:
        changed = state.gate.update(
            kospi.change_percent,
            kosdaq.change_percent,
            kospi.advancers + kosdaq.advancers,
            kospi.decliners + kosdaq.decliners,
            ev.received_ns / 1e9,
        )
    except ValueError as exc:  # a bad input costs this update (counted there), not the router
        # ... and only this one: the gate keeps reading the last good value of this index,
        # so the other index's updates are not refused along with it
        if previous is None:
            del state.indexes[ev.index]
        else:
            state.indexes[ev.index] = previous
        if state.gate.rejected & (state.gate.rejected - 1) == 0:  # the 1st, 2nd, 4th, ...
            logging.getLogger(__name__).warning(
                "market gate: update %d refused (%s)", state.gate.rejected, exc
            )
        return
    if changed is not None:
        state.gate_state = changed
        gate = Msg(
            wire.market_gate_update(gate_data(changed, ev.time.astimezone(KST))),
            "market_gate_update",
            ev.received_ns,
        )
        state.last[topics.MARKET_GATE] = gate
        hub.publish_latest(topics.MARKET_GATE, gate)
