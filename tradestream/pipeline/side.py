"""The side edge: events made outside the feeds (slot audits, signals, strategy signals) on
their way to the store, beside the router.

Producers never wait: `SideEvents.put` drops and counts when the edge is full or already
closed. `run_forwarder` hands them on to the store's channel. The edge closes once the router
and the strategies are done (pipeline/routing.py), so what a drain produces is stored too.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from tradestream.events import Event

SIDE_BUFFER = 1000  # side events queued before producers' events are dropped (and counted)


class SideEvents:
    """The producers' end of the side edge (bounded, never waits: drop and count)."""

    def __init__(self, size: int = SIDE_BUFFER) -> None:
        self._out, self.receive_end = trio.open_memory_channel[Event](size)
        self.stats = {"forwarded": 0, "dropped": 0}  # handed to the store, dropped
        # given each event the edge takes (store/journal.py): a kill loses none of them
        self.journal: Callable[[list[Event]], None] | None = None

    def put(self, ev: Event) -> None:
        try:
            self._out.send_nowait(ev)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.stats["dropped"] += 1
            return
        if self.journal is not None:
            self.journal([ev])

    def close(self) -> None:
        """No more side events: the forwarder hands on the rest, then closes its store end."""
        self._out.close()


async def run_forwarder(
    side: SideEvents,
    out: trio.MemorySendChannel[Event],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Hand side events to the store until the side edge is closed and drained. Owns `out`
    and the edge's receive end. A hard stop ends it too: what is still queued is handed on
    without waiting, or counted as dropped."""
    side_in, stats = side.receive_end, side.stats
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
