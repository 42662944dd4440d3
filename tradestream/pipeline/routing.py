"""The routing stage with the strategies behind it, and the order they stop in.

The router (pipeline/stages.py) ends when its input is closed and drained; then the strategies
get STRATEGY_DRAIN_S to finish what they hold (their signals go to the store too), and only
then does the side edge close, which lets the store finish.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from tradestream.accounts import HoldingChange
from tradestream.events import Event, Tick
from tradestream.hub import Hub
from tradestream.pipeline.canon import TradeCanon
from tradestream.pipeline.side import SideEvents
from tradestream.pipeline.stages import MarketState, RouterStats, run_router
from tradestream.strategies import StrategyHost

STRATEGY_DRAIN_S = 3.0  # at a stop: strategies get this long for what they hold


class StrategyStage:
    """The strategy host as a stage of the tree: `run` in the draining nursery, `drain` once
    the router is done."""

    def __init__(self, host: StrategyHost, drain_s: float = STRATEGY_DRAIN_S) -> None:
        self.host = host
        self._drain_s = drain_s
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                await self.host.run(task_status=task_status)
        finally:
            self._done.set()

    async def drain(self) -> None:
        """No more events: the strategies finish what they hold within the drain time; then
        they are cancelled."""
        self.host.close()
        try:
            with trio.move_on_after(self._drain_s):
                await self._done.wait()
        finally:
            self._scope.cancel()


async def run_routing(
    events_in: trio.MemoryReceiveChannel[Event],
    store_out: trio.MemorySendChannel[Event],
    hub: Hub,
    state: MarketState,
    stats: RouterStats,
    *,
    strategies: StrategyStage,
    side: SideEvents,
    on_holding: Callable[[HoldingChange], None] | None = None,
    on_tick: Callable[[Tick], Event | None] | None = None,
    observe: Callable[[Event], None] | None = None,
    journal: Callable[[list[Event]], None] | None = None,
    canon: TradeCanon | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """`run_router` (owns `events_in` and `store_out`), then the strategies' drain, then the
    side edge's close."""
    try:
        await run_router(
            events_in,
            store_out,
            hub,
            state,
            stats,
            on_holding=on_holding,
            on_tick=on_tick,
            observe=observe,
            journal=journal,
            canon=canon,
            task_status=task_status,
        )
    finally:
        try:
            await strategies.drain()
        finally:
            side.close()
