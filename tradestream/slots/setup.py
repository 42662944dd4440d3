"""The slot driver for the sessions of the slotted brokers (KIS), as the settings describe it.

Each session gets `usable_capacity` registrations (kis.md §3: 41 over all TR ids, less the
spare margin); the execution notices ride on the first session and take one of them. Codes
other brokers stream (LS) need no slot. Stale slots are looked for during KRX/NXT hours
(slots/hours.py), or at any time with `always_open` (the simulator). Each session's adapter
registers, at every connect, what the driver holds for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

from tradestream.config import Settings
from tradestream.events import KST, SlotAudit
from tradestream.feeds.broker import FeedSession
from tradestream.feeds.kis.adapter import KisAdapter
from tradestream.feeds.registry import streamed_codes
from tradestream.session_calendar import Calendar
from tradestream.slots import hours
from tradestream.slots.driver import SlotDriver, SlotSession
from tradestream.slots.policy import Rejection, SlotManager, usable_capacity
from tradestream.slots.views import audit_event

log = logging.getLogger(__name__)


class MarketHours:
    """Whether the venue of a TR streams now, by the session calendar (a silent slot outside
    its hours is not stale); `calendar` is replaced once the broker's market days are known.
    `always_open`: the simulator, which trades around the clock."""

    def __init__(self, calendar: Calendar, *, always_open: bool = False) -> None:
        self.calendar = calendar
        self.always_open = always_open

    def __call__(self, tr_id: str) -> bool:
        if self.always_open:
            return True
        book = tr_id in hours.BOOK_TRS
        return self.calendar.venue_open(hours.venue_of(tr_id), datetime.now(KST), book=book)


def build_slot_driver(
    s: Settings,
    sessions: Sequence[FeedSession],
    *,
    on_audit: Callable[[SlotAudit], None],
    on_dropped: Callable[[Rejection], None],
    always_open: bool = False,
    hours_: MarketHours | None = None,
) -> SlotDriver:
    """A driver over `sessions` (KIS adapters), with the configured picks claimed. `hours_`:
    when the market is open (its calendar may be replaced once the broker's is known)."""
    k = s.kis
    capacity = usable_capacity(k.registration_limit, 0, k.slot_margin)
    prices, books = streamed_codes(s, slotted=False)
    market_open = hours_ or MarketHours(Calendar(holidays=frozenset(k.market_holidays)))
    market_open.always_open = market_open.always_open or always_open

    slot_sessions = []
    for fs in sessions:
        assert isinstance(fs.adapter, KisAdapter), "only KIS sessions are slotted"
        slot_sessions.append(SlotSession(fs.status.name, capacity, fs.adapter, fs.status))
    manager = SlotManager(
        {x.name: capacity for x in slot_sessions},
        scanner_dwell_s=k.scanner_dwell_s,
        stale_s=k.slot_stale_s,
    )
    driver = SlotDriver(
        manager,
        slot_sessions,
        notice=k.notice_key(),
        static_prices=prices,
        static_books=books,
        on_dropped=on_dropped,
        on_audit=lambda a: on_audit(audit_event(a)),
        lost_after_s=k.lost_after_s,
        market_open=market_open,
        clock=time.time,
        max_demand_per_user=s.gateway.max_demand_per_user,
    )
    for fs in sessions:
        assert isinstance(fs.adapter, KisAdapter)
        fs.adapter.follow(partial(driver.registrations, fs.status.name))
    driver.set_picks(k.pick_keys())
    if manager.pending():
        log.warning(
            "%d configured registrations wait for a slot (capacity %d over %d sessions)",
            len(manager.pending()),
            sum(u.capacity for u in manager.usage().values()),
            len(slot_sessions),
        )
    return driver
