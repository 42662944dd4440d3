"""Trading hours (pure): is the market of a real-time TR open at a given time?

The slot manager reports a slot silent "while the market is open" (`SlotManager.tick`); outside
the hours of its venue a quiet slot is normal. Times are KST (no daylight saving time); weekends
and the `holidays` given are closed all day.

- KRX (the H0ST* TRs and the index TR H0UPCNT0): the regular session, weekdays 09:00-15:30:
  continuous trading to 15:20, then the closing call auction, whose single trade prints at
  15:30. During the auction no trade prints, so trades, program trading and the indexes count
  as open 09:00-15:20 only; order books (H0STASP0) go on carrying the auction's expected price
  and count as open to 15:30. Otherwise every trades slot would be reported stale, and
  re-registered, at the same moment every afternoon.
- NXT (Nextrade, the H0NX* TRs): pre-market 08:00-08:50, main 09:00-15:20 (09:00:30 in fact:
  the half minute is below any stale threshold), after-market 15:30-20:00. The gaps between
  them are ten minutes, longer than the default stale threshold, so they count as closed.
- Unified KRX+NXT (the H0UN* TRs): open when either venue is, 08:00-08:50 and 09:00-20:00;
  for trades without 15:20-15:30, when NXT pauses and KRX is in its closing auction.

KRX's after-hours sessions (08:30-08:40 and 15:40-16:00 at the close price, 16:00-18:00
single price every 10 minutes) are not counted: trades there are rare and bunched, so a slot
that is silent then is not broken.
"""

from __future__ import annotations

from collections.abc import Container
from datetime import date, datetime, time

from tradestream.events import KST
from tradestream.upstream import ORDER_BOOK_TRS

Window = tuple[time, time]  # [start, end)

KRX_HOURS: tuple[Window, ...] = ((time(9, 0), time(15, 30)),)  # order books
KRX_TRADE_HOURS: tuple[Window, ...] = ((time(9, 0), time(15, 20)),)
NXT_HOURS: tuple[Window, ...] = (
    (time(8, 0), time(8, 50)),
    (time(9, 0), time(15, 20)),
    (time(15, 30), time(20, 0)),
)
UNIFIED_HOURS: tuple[Window, ...] = ((time(8, 0), time(8, 50)), (time(9, 0), time(20, 0)))
UNIFIED_TRADE_HOURS: tuple[Window, ...] = NXT_HOURS  # KRX adds nothing outside NXT's windows
BOOK_TRS = frozenset(ORDER_BOOK_TRS)


def venue_of(tr_id: str) -> str:
    """ "NXT", "UN" (unified) or "KRX" (every other TR, the indexes included)."""
    if tr_id.startswith("H0NX"):
        return "NXT"
    if tr_id.startswith("H0UN"):
        return "UN"
    return "KRX"


HOURS: dict[str, tuple[Window, ...]] = {
    "KRX": KRX_HOURS,
    "NXT": NXT_HOURS,
    "UN": UNIFIED_HOURS,
}  # order books
TRADE_HOURS: dict[str, tuple[Window, ...]] = {
    "KRX": KRX_TRADE_HOURS,
    "NXT": NXT_HOURS,
    "UN": UNIFIED_TRADE_HOURS,
}


def market_open(tr_id: str, now: datetime, holidays: Container[date] = frozenset()) -> bool:
    """Whether the venue of `tr_id` trades at `now` (tz-aware; converted to KST)."""
    if now.tzinfo is None:
        raise ValueError("market_open needs a tz-aware time")
    kst = now.astimezone(KST)
    if kst.weekday() >= 5 or kst.date() in holidays:
        return False
    t = kst.time().replace(tzinfo=None)
    windows = (HOURS if tr_id in BOOK_TRS else TRADE_HOURS)[venue_of(tr_id)]
    return any(start <= t < end for start, end in windows)
