"""The scanner slots' codes: finds posted by a producer (POST /api/watchlist/scanner) first,
then the day's top movers (detect/movers.py), re-ranked every `every_s`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import trio

from tradestream.detect.movers import MoverScanner
from tradestream.slots.driver import SlotDriver


class ScannerSlots:
    def __init__(
        self,
        driver: SlotDriver,
        movers: MoverScanner,
        top_n: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._driver = driver
        self._movers = movers
        self._top_n = top_n  # movers promoted (0: posted finds only)
        self._clock = clock
        self.posted: set[str] = set()

    def post(self, codes: Sequence[str]) -> list[str]:
        """Replace the posted finds; returns them, sorted."""
        self.posted = set(codes)
        self.refresh()
        return sorted(self.posted)

    def refresh(self) -> None:
        top = [m.code for m in self._movers.top(self._top_n, self._clock())] if self._top_n else []
        self._driver.set_scanner([*self.posted, *(c for c in top if c not in self.posted)])

    async def run(
        self, every_s: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(every_s)
            self.refresh()
