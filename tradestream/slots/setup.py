"""The slot driver for the sessions of the slotted brokers (KIS, Kiwoom), as the settings
describe it.

Each KIS session gets `usable_capacity` registrations (kis.md §3: 41 over all TR ids, less the
spare margin); the execution notices ride on the first session and take one of them. A Kiwoom
session carries trades and order books, `registration_limit` of them; codes prefer KIS unless
`TRADESTREAM_KIWOOM_PREFERRED` names them, and either broker takes the other's codes when its
session is lost (after `failover_after_s`). Codes other brokers stream (LS) need no slot.
Stale slots are looked for during KRX/NXT hours (slots/hours.py), or at any time with
`always_open` (the simulator). Each session's adapter registers, at every connect, what the
driver holds for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Protocol, runtime_checkable

from tradestream.config import Settings
from tradestream.events import KST, SlotAudit
from tradestream.feeds.broker import FeedSession
from tradestream.feeds.registry import BROKERS, streamed_codes
from tradestream.session_calendar import Calendar
from tradestream.slots import hours
from tradestream.slots.driver import OpSink, SlotDriver, SlotSession
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


@runtime_checkable
class SlotAdapter(OpSink, Protocol):
    """A slotted broker's session adapter: it registers, at every connect, what `follow`
    gives it (the driver's choice for the session), and takes the driver's ops between."""

    def follow(self, desired: Callable[[], list[tuple[str, str]]]) -> None: ...


def _preferred(s: Settings, code: str) -> str:
    """The broker a code's registrations go to while it has room."""
    return "kiwoom" if s.kiwoom.prefers(code) else "kis"


def build_slot_driver(
    s: Settings,
    sessions: Sequence[FeedSession],
    *,
    on_audit: Callable[[SlotAudit], None],
    on_dropped: Callable[[Rejection], None],
    always_open: bool = False,
    hours_: MarketHours | None = None,
) -> SlotDriver:
    """A driver over `sessions` (the slotted brokers' adapters), with the configured picks
    claimed. `hours_`: when the market is open (its calendar may be replaced once the
    broker's is known)."""
    k = s.kis
    usable_capacity(k.registration_limit, 0, k.slot_margin)  # checked: some room is left
    prices, books = streamed_codes(s, slotted=False)
    market_open = hours_ or MarketHours(Calendar(holidays=frozenset(k.market_holidays)))
    market_open.always_open = market_open.always_open or always_open

    slot_sessions = []
    for fs in sessions:
        b = BROKERS[fs.adapter.broker]
        assert b.slotted and isinstance(fs.adapter, SlotAdapter), f"{b.tag} is not slotted"
        slot_sessions.append(
            SlotSession(fs.status.name, b.slot_capacity(s), fs.adapter, fs.status, b.tag, b.carries)
        )
    brokers = {x.broker for x in slot_sessions}
    manager = SlotManager(
        {x.name: x.capacity for x in slot_sessions},
        scanner_dwell_s=k.scanner_dwell_s,
        stale_s=k.slot_stale_s,
        carries={x.name: x.carries for x in slot_sessions if x.carries is not None},
        brokers={x.name: x.broker for x in slot_sessions},
        prefer=partial(_preferred, s) if len(brokers) > 1 else None,
    )
    driver = SlotDriver(
        manager,
        slot_sessions,
        notice=k.notice_key(),
        static_prices=prices,
        static_books=books,
        on_dropped=on_dropped,
        on_audit=lambda a: on_audit(audit_event(a)),
        # two brokers: a lost session's codes fail over to the other soon
        lost_after_s=s.kiwoom.failover_after_s if len(brokers) > 1 else k.lost_after_s,
        market_open=market_open,
        clock=time.time,
        max_demand_per_user=s.gateway.max_demand_per_user,
    )
    for fs in sessions:
        assert isinstance(fs.adapter, SlotAdapter)
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
