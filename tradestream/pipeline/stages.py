"""Pipeline stages: the async wrappers between the feeds, the hub and the store."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from tradestream.events import Tick
from tradestream.gateway.protocol import price_update
from tradestream.hub import Hub


@dataclass
class RouterStats:
    ticks: int = 0
    published: int = 0  # ticks that had at least one subscriber (and so were encoded)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


async def run_tick_router(
    ticks_in: trio.MemoryReceiveChannel[Tick],
    store_out: trio.MemorySendChannel[Tick],
    hub: Hub,
    latest: dict[str, Tick],
    stats: RouterStats,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send each tick to the store and to the `price:{code}` subscribers.

    Owns `ticks_in` and `store_out`; returns when `ticks_in` is closed and drained, closing
    `store_out` so the flusher finishes next. The store edge blocks (lossless); the hub never
    blocks (it conflates per client). A tick is encoded only if someone watches its topic,
    and then once for all of them.
    """
    with ticks_in, store_out:
        task_status.started()
        async for tick in ticks_in:
            stats.ticks += 1
            latest[tick.code] = tick
            topic = "price:" + tick.code
            if hub.has_subscribers(topic):
                hub.publish_latest(topic, price_update(tick))
                stats.published += 1
            await store_out.send(tick)
