"""Pipeline stages: the async wrappers between the feeds, the hub and the store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import trio

from tradestream.events import Event, FeedGap, Tick
from tradestream.gateway import protocol
from tradestream.hub import Hub


@dataclass
class RouterStats:
    ticks: int = 0
    events: int = 0
    published: int = 0  # ticks that had at least one subscriber (and so were encoded)
    by_type: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {"events": self.events, "ticks": self.ticks, "published": self.published,
                "by_type": dict(self.by_type), "by_source": dict(self.by_source)}


async def run_router(
    events_in: trio.MemoryReceiveChannel[Event],
    store_out: trio.MemorySendChannel[Event],
    hub: Hub,
    latest: dict[str, Tick],
    stats: RouterStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send each event to the store, and to the gateway clients that asked for it.

    Owns `events_in` and `store_out`; returns when `events_in` is closed and drained, closing
    `store_out` so the flusher finishes next. The store edge blocks (lossless); the hub never
    blocks (it conflates or disconnects per client). A price update is encoded only if
    someone watches its topic, and then once for all of them.
    """
    with events_in, store_out:
        task_status.started()
        async for ev in events_in:
            stats.events += 1
            stats.by_type[type(ev).__name__] += 1
            stats.by_source[ev.source] += 1
            if isinstance(ev, Tick):
                stats.ticks += 1
                latest[ev.code] = ev
                topic = "price:" + ev.code
                if hub.has_subscribers(topic):
                    hub.publish_latest(topic, protocol.price_update(ev))
                    stats.published += 1
            elif isinstance(ev, FeedGap):
                hub.broadcast(protocol.feed_gap(ev))  # every client: silence is not a quiet market
            await store_out.send(ev)
