"""The scanner slots' codes: finds posted by a producer (POST /api/watchlist/scanner) first,
then the broker's market-wide finds (slots/market_movers.py: codes not streamed yet, with
where they were found for the slot audit), then the day's top movers among the streamed codes
(detect/movers.py), re-ranked every `every_s`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import trio

from tradestream.detect.movers import MoverScanner
from tradestream.slots.driver import SlotDriver
from tradestream.slots.market_movers import Find


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
        self.market: list[Find] = []  # the broker's rankings' finds (slots/market_movers.py)

    def set_market(self, finds: list[Find]) -> None:
        self.market = finds
        self.refresh()

    def post(self, codes: Sequence[str]) -> list[str]:
        """Replace the posted finds; returns them, sorted."""
        self.posted = set(codes)
        self.refresh()
        return sorted(self.posted)

    def refresh(self) -> None:
        top = [m.code for m in self._movers.top(self._top_n, self._clock())] if self._top_n else []
        market = [f.code for f in self.market]
        codes = dict.fromkeys([*self.posted, *market, *top])
        self._driver.set_scanner(list(codes), why={f.code: f.why for f in self.market})

    async def run(
        self, every_s: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        while True:
            await trio.sleep(every_s)
            self.refresh()
