"""Gap backfill: when a feed gap closes, the minutes it lost are asked of the broker's
minute-bar TR (kis-rest.md §6.1) for every code whose trades that session carries, and stored
as `MinuteBar`s beside the streamed trades, so `/api/bars` over the gap is complete.

Rules (`backfill_window`, pure):
- every minute the gap touches, its two ends included: the broker's bar for a minute has all of
  its trades, so a stored bar supersedes the trades streamed in that minute (store/reads.py)
  and nothing is counted twice; the fetch waits until the gap's last minute is over (plus
  `settle_s`), so that bar is whole;
- only today's regular session, 09:00-15:30 KST on a trading day (any hour with the
  simulator, which trades around the clock): there is nothing to fetch outside it;
- the TR reaches back to today's start only: a gap that began before today is "partial"
  (or "beyond_reach" when nothing of it is today), and says so in the `Backfill` record.

`Backfiller` (the shell) takes gaps from the router without blocking it (a bounded queue; a
gap that does not fit is dropped and counted), fetches code by code through the shared,
rate-limited REST client, retries a failing code with backoff, and hands the bars and one
`Backfill` record per gap to the events edge (blocking: they are stored like any event).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime

import trio

from tradestream.backoff import Backoff
from tradestream.events import KST, Backfill, Event, FeedGap, MinuteBar
from tradestream.feeds.kis.rest import Bar, KisRest, KisRestError

log = logging.getLogger(__name__)

SESSION = (dtime(9, 0), dtime(15, 30))  # KRX regular session, KST
QUEUE = 64  # gaps waiting for their backfill
ATTEMPTS = 4  # per code, with backoff between them
SOURCE = "kis-rest"
SETTLE_S = 3.0  # after a minute ends, before its bar is asked for


@dataclass(frozen=True)
class Window:
    first: datetime | None  # the first whole minute to fetch (KST), None: nothing
    last: datetime | None  # the last one (included)
    status: str  # "done" (so far), "partial", "beyond_reach", "closed"
    detail: str


def backfill_window(
    start: datetime,
    end: datetime,
    *,
    always_open: bool = False,
    holidays: Container[date] = frozenset(),
) -> Window:
    """The whole minutes of the gap [start, end) that today's minute-bar TR can give."""
    s, e = start.astimezone(KST), end.astimezone(KST)
    day = e.date()
    midnight = datetime.combine(day, dtime(0), KST)
    if always_open:
        open_, close = midnight, midnight + timedelta(days=1)
    elif day.weekday() >= 5 or day in holidays:
        return Window(None, None, "closed", f"{day} is not a trading day")
    else:
        open_ = datetime.combine(day, SESSION[0], KST)
        close = datetime.combine(day, SESSION[1], KST)
    before_today = s < midnight
    lo, hi = max(s, open_), min(e, close)
    first = lo.replace(second=0, microsecond=0)
    last = (hi - timedelta(microseconds=1)).replace(second=0, microsecond=0)
    reach = f"before {midnight.isoformat()}: beyond the minute-bar TR's reach (today only)"
    if lo >= hi:  # nothing of today's session inside the gap
        if before_today:
            return Window(None, None, "beyond_reach", reach)
        return Window(None, None, "closed", "outside the regular session")
    return Window(first, last, "partial" if before_today else "done", reach if before_today else "")


@dataclass
class BackfillStats:
    requested: int = 0
    done: int = 0
    bars: int = 0
    failed: int = 0  # gaps with at least one code that could not be fetched
    retries: int = 0
    dropped: int = 0  # gaps that did not fit the queue
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class Backfiller:
    def __init__(
        self,
        rest: KisRest,
        codes_for: Callable[[str], list[str]],
        *,
        always_open: bool = False,
        holidays: Container[date] = frozenset(),
        retry_initial_s: float = 2.0,
        retry_cap_s: float = 30.0,
        settle_s: float = SETTLE_S,
    ) -> None:
        self._rest = rest
        self._codes_for = codes_for
        self._always_open = always_open
        self._holidays = holidays
        self._retry = (retry_initial_s, retry_cap_s)
        self._settle_s = settle_s
        self._out, self._in = trio.open_memory_channel[FeedGap](QUEUE)
        self.stats = BackfillStats()

    def request(self, gap: FeedGap) -> None:
        """A closed gap (from the router: never blocks)."""
        self.stats.requested += 1
        try:
            self._out.send_nowait(gap)
        except trio.WouldBlock:
            self.stats.dropped += 1
            log.warning("backfill: queue full, the gap of %s at %s is not backfilled",
                        gap.source, gap.start.isoformat())  # fmt: skip

    async def run(
        self,
        events_out: trio.MemorySendChannel[Event],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Backfill the gaps as they come, until cancelled. Owns `events_out`."""
        with events_out, self._in:
            task_status.started()
            async for gap in self._in:
                await self._one(gap, events_out)

    async def _one(self, gap: FeedGap, out: trio.MemorySendChannel[Event]) -> None:
        w = backfill_window(
            gap.start, gap.end, always_open=self._always_open, holidays=self._holidays
        )
        if w.last is not None:  # the broker's bar of the gap's last minute must be whole
            ready = w.last + timedelta(seconds=60 + self._settle_s)
            await trio.sleep(max(0.0, (ready - datetime.now(KST)).total_seconds()))
        codes = (gap.codes or self._codes_for(gap.source)) if w.first is not None else []
        bars, failed = 0, []
        for code in codes:
            assert w.first is not None and w.last is not None
            got = await self._fetch(code, w.first, w.last)
            if got is None:
                failed.append(code)
                continue
            now = time.time_ns()
            for b in got:
                await out.send(
                    MinuteBar(SOURCE, code, b.minute.astimezone(UTC), b.open, b.high, b.low,
                              b.close, b.volume, now)
                )  # fmt: skip
            bars += len(got)
        status, detail = w.status, w.detail
        if failed:
            status = "failed"
            detail = f"{len(failed)} of {len(codes)} codes not fetched ({self.stats.last_error})"
            self.stats.failed += 1
        else:
            self.stats.done += 1
        self.stats.bars += bars
        log.info("backfill of %s's gap %s - %s: %s, %d codes, %d bars%s",
                 gap.source, gap.start.isoformat(timespec="seconds"),
                 gap.end.isoformat(timespec="seconds"), status, len(codes), bars,
                 f" ({detail})" if detail else "")  # fmt: skip
        await out.send(
            Backfill(gap.source, gap.start, gap.end, len(codes), bars, status, detail[:300],
                     time.time_ns())
        )  # fmt: skip

    async def _fetch(self, code: str, first: datetime, last: datetime) -> list[Bar] | None:
        backoff = Backoff(*self._retry)
        for attempt in range(ATTEMPTS):
            try:
                return await self._rest.bars_today(code, first, last)
            except KisRestError as exc:
                self.stats.last_error = str(exc)[:200]
                if attempt + 1 < ATTEMPTS:
                    self.stats.retries += 1
                    await trio.sleep(backoff.next())
        log.warning("backfill of %s failed %d times: %s", code, ATTEMPTS, self.stats.last_error)
        return None
