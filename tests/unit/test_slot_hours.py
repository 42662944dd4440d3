"""Trading hours for stale-slot detection (pure): KRX, NXT and unified TRs, weekends,
holidays, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tradestream.events import KST
from tradestream.slots.hours import market_open, venue_of

MONDAY = date(2026, 3, 2)


def at(hhmm: str, day: date = MONDAY) -> datetime:
    h, m = int(hhmm[:2]), int(hhmm[2:])
    return datetime(day.year, day.month, day.day, h, m, tzinfo=KST)


@pytest.mark.parametrize(
    ("hhmm", "krx_trades", "krx_book", "nxt", "un_trades", "un_book"),
    [
        ("0759", False, False, False, False, False),
        ("0800", False, False, True, True, True),
        ("0849", False, False, True, True, True),
        ("0850", False, False, False, False, False),  # NXT's gap before the main session
        ("0859", False, False, False, False, False),
        ("0900", True, True, True, True, True),
        ("1519", True, True, True, True, True),
        # NXT pauses; KRX's closing auction to 15:30 prints no trade, only expected prices
        ("1520", False, True, False, False, True),
        ("1529", False, True, False, False, True),
        ("1530", False, False, True, True, True),  # KRX closed; NXT's after-market
        ("1959", False, False, True, True, True),
        ("2000", False, False, False, False, False),
    ],
)
def test_hours_per_venue(
    hhmm: str, krx_trades: bool, krx_book: bool, nxt: bool, un_trades: bool, un_book: bool
) -> None:
    t = at(hhmm)
    assert market_open("H0STCNT0", t) is krx_trades
    assert market_open("H0STPGM0", t) is krx_trades
    assert market_open("H0UPCNT0", t) is krx_trades  # KRX's indexes
    assert market_open("H0STASP0", t) is krx_book
    assert market_open("H0NXCNT0", t) is nxt
    assert market_open("H0NXASP0", t) is nxt
    assert market_open("H0UNCNT0", t) is un_trades
    assert market_open("H0UNASP0", t) is un_book


def test_weekends_and_holidays_are_closed() -> None:
    saturday, sunday = date(2026, 3, 7), date(2026, 3, 8)
    assert not market_open("H0STCNT0", at("1000", saturday))
    assert not market_open("H0NXCNT0", at("1000", sunday))
    assert market_open("H0STCNT0", at("1000"))
    assert not market_open("H0STCNT0", at("1000"), holidays={MONDAY})
    assert not market_open("H0UNCNT0", at("1000"), holidays=frozenset({MONDAY}))


def test_any_time_zone_is_read_as_kst() -> None:
    # 00:30 UTC is 09:30 KST on the same Monday; 06:30 UTC is 15:30 KST
    assert market_open("H0STCNT0", datetime(2026, 3, 2, 0, 30, tzinfo=UTC))
    assert not market_open("H0STCNT0", datetime(2026, 3, 2, 6, 30, tzinfo=UTC))
    # Sunday 23:30 UTC is Monday 08:30 KST: NXT's pre-market
    assert market_open("H0NXCNT0", datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    with pytest.raises(ValueError):
        market_open("H0STCNT0", datetime(2026, 3, 2, 10, 0))


def test_venues() -> None:
    assert [venue_of(t) for t in ("H0STCNT0", "H0NXASP0", "H0UNPGM0", "H0UPCNT0")] == [
        "KRX",
        "NXT",
        "UN",
        "KRX",
    ]


def test_the_session_calendar_keeps_these_hours_and_moves_them_on_special_days() -> None:
    """The slots' market hours now come from session_calendar.py: on a normal day they are
    these tables', minute by minute (mid-minute: NXT's main session starts at 09:00:30), for
    every venue, trades and books; a late open moves KRX's and a holiday closes all."""
    from datetime import timedelta

    from tradestream.session_calendar import Calendar, SpecialDay
    from tradestream.slots.hours import BOOK_TRS

    cal = Calendar()
    trs = ["H0STCNT0", "H0STASP0", "H0NXCNT0", "H0NXASP0", "H0UNCNT0", "H0UNASP0", "H0UPCNT0"]
    start = datetime(MONDAY.year, MONDAY.month, MONDAY.day, 0, 0, 30, tzinfo=KST)
    for minute in range(24 * 60):
        when = start + timedelta(minutes=minute)
        for tr in trs:
            expected = market_open(tr, when)
            got = cal.venue_open(venue_of(tr), when, book=tr in BOOK_TRS)
            assert got == expected, (tr, when.time())
    late = Calendar(special={MONDAY: SpecialDay(60, 60, "exam")})
    assert not late.venue_open("KRX", at("0930")) and late.venue_open("KRX", at("1600"))
    assert late.venue_open("NXT", at("0930"))  # NXT keeps its hours
    closed = Calendar(holidays=frozenset({MONDAY}))
    assert not any(closed.venue_open(v, at("1000")) for v in ("KRX", "NXT", "UN"))


def test_the_slots_market_hours_follow_a_replaced_calendar() -> None:
    from tradestream.session_calendar import Calendar
    from tradestream.slots.setup import MarketHours

    today = datetime.now(KST).date()
    hours = MarketHours(Calendar(holidays=frozenset({today})))
    assert hours("H0STCNT0") is False and hours("H0NXCNT0") is False  # a holiday: all day
    hours.always_open = True  # the simulator
    assert hours("H0STCNT0") is True
    hours.always_open = False
    hours.calendar = Calendar()  # the broker's, once known
    assert hours("H0STCNT0") == market_open("H0STCNT0", datetime.now(KST))
