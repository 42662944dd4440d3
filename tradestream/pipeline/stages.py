"""Pipeline stages: the async wrappers between the feeds, the hub and the store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from tradestream.accounts import AccountBook, HoldingChange
from tradestream.events import Event, Execution, FeedGap, News, OrderBook, Tick
from tradestream.gateway import protocol
from tradestream.hub import Hub, Msg

DRAIN_MAX = 1024  # events taken from the channel per wake-up


@dataclass
class RouterStats:
    ticks: int = 0
    events: int = 0
    published: int = 0  # events that had at least one subscriber (and so were encoded)
    by_type: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"events": self.events, "ticks": self.ticks, "published": self.published,
                "by_type": dict(self.by_type), "by_source": dict(self.by_source)}


@dataclass
class MarketState:
    """What the router knows right now; read by the gateway for snapshots and requests."""

    latest: dict[str, Tick] = field(default_factory=dict)  # latest trade per code
    books: dict[str, OrderBook] = field(default_factory=dict)  # latest order book per code
    last: dict[str, Msg] = field(default_factory=dict)  # latest message of index/gate topics
    accounts: AccountBook = field(default_factory=AccountBook)


def order_keys(ex: Execution) -> tuple[str, str, str, str]:
    """Hub keys of an execution: its account's (all orders, this order), and the admin's."""
    return (f"order@{ex.account}", f"order@{ex.account}:{ex.order_no}", "order@*",
            f"order@*:{ex.order_no}")


async def run_router(
    events_in: trio.MemoryReceiveChannel[Event],
    store_out: trio.MemorySendChannel[Event],
    hub: Hub,
    state: MarketState,
    stats: RouterStats,
    *,
    on_holding: Callable[[HoldingChange], None] | None = None,
    on_tick: Callable[[Tick], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send each event to the store, and to the gateway clients that asked for it.

    Owns `events_in` and `store_out`; returns when `events_in` is closed and drained, closing
    `store_out` so the flusher finishes next. The store edge blocks (lossless); the hub never
    blocks (it conflates or disconnects per client). An event is encoded only if someone
    watches one of its topics, and then once for all of them.
    """
    has = hub.has_subscribers
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
            for ev in batch:
                _route(ev, hub, has, state, stats, on_holding)
                if on_tick is not None and type(ev) is Tick:
                    on_tick(ev)  # the slot manager's data clock, the scanner, the detector
            for ev in batch:
                try:
                    store_out.send_nowait(ev)
                except trio.WouldBlock:
                    await store_out.send(ev)  # the store is behind: block (lossless)


def _route(ev: Event, hub: Hub, has: Callable[[str], bool], state: MarketState,
           stats: RouterStats, on_holding: Callable[[HoldingChange], None] | None) -> None:
    stats.events += 1
    stats.by_type[type(ev).__name__] += 1
    stats.by_source[ev.source] += 1
    if isinstance(ev, Tick):
        stats.ticks += 1
        state.latest[ev.code] = ev
        topic = "price:" + ev.code
        if has(topic):
            hub.publish_latest(topic, Msg(protocol.price_update(ev), "price_update",
                                          ev.received_ns))
            stats.published += 1
    elif isinstance(ev, OrderBook):
        state.books[ev.code] = ev
        topic = "orderbook:" + ev.code
        if has(topic):
            hub.publish_latest(topic, Msg(protocol.orderbook_update(ev), "orderbook_update",
                                          ev.received_ns))
            stats.published += 1
    elif isinstance(ev, Execution):
        order, change = state.accounts.apply(ev)
        keys = order_keys(ev)
        if any(has(k) for k in keys):
            msg = Msg(protocol.order_update(ev, order.as_dict()), "order_update", ev.received_ns)
            for k in keys:
                hub.publish(k, msg)
            stats.published += 1
        if change is not None and on_holding is not None:
            on_holding(change)
    elif isinstance(ev, News):
        topics = ["news", *dict.fromkeys("news:" + t for t in ev.tickers)]
        if any(has(t) for t in topics):
            msg = Msg(protocol.news(ev), "news", ev.received_ns)
            for t in topics:
                hub.publish(t, msg)
            stats.published += 1
    elif isinstance(ev, FeedGap):
        hub.broadcast(Msg(protocol.feed_gap(ev), "feed_gap"))  # silence is not a quiet market
