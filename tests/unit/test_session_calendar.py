"""The KRX session calendar (session_calendar.py): phases of a day on KRX and NXT, holidays,
special days, the broker's holiday rows."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from tradestream.events import KST
from tradestream.session_calendar import (
    EXAM_DAY,
    Calendar,
    Phase,
    SpecialDay,
    parse_holidays,
)

THU = date(2026, 12, 3)  # a normal Thursday


def at(d: date, hhmm: str) -> datetime:
    h, m, *s = (int(x) for x in hhmm.split(":"))
    return datetime(d.year, d.month, d.day, h, m, s[0] if s else 0, tzinfo=KST)


@pytest.mark.parametrize(
    ("hhmm", "krx", "nxt"),
    [
        ("07:59", Phase.CLOSED, Phase.CLOSED),
        ("08:00", Phase.CLOSED, Phase.PRE_MARKET),
        ("08:30", Phase.PRE_HOURS_CLOSE, Phase.PRE_MARKET),
        ("08:40", Phase.OPENING_AUCTION, Phase.PRE_MARKET),
        ("08:50", Phase.OPENING_AUCTION, Phase.CLOSED),
        ("09:00", Phase.REGULAR, Phase.CLOSED),
        ("09:00:30", Phase.REGULAR, Phase.MAIN),
        ("15:19", Phase.REGULAR, Phase.MAIN),
        ("15:20", Phase.CLOSING_AUCTION, Phase.CLOSED),
        ("15:30", Phase.CLOSED, Phase.AFTER_MARKET),
        ("15:40", Phase.AFTER_HOURS_CLOSE, Phase.AFTER_MARKET),
        ("16:00", Phase.AFTER_HOURS_SINGLE, Phase.AFTER_MARKET),
        ("18:00", Phase.CLOSED, Phase.AFTER_MARKET),
        ("20:00", Phase.CLOSED, Phase.CLOSED),
    ],
)
def test_the_phases_of_a_normal_day(hhmm: str, krx: Phase, nxt: Phase) -> None:
    cal = Calendar()
    assert (cal.krx_phase(at(THU, hhmm)), cal.nxt_phase(at(THU, hhmm))) == (krx, nxt)


def test_weekends_and_holidays_are_closed_all_day() -> None:
    cal = Calendar(holidays=frozenset({THU}))
    assert cal.krx_phase(at(THU, "10:00")) is Phase.CLOSED
    assert cal.nxt_phase(at(THU, "10:00")) is Phase.CLOSED  # NXT follows KRX's holidays
    assert cal.krx_phase(at(date(2026, 12, 5), "10:00")) is Phase.CLOSED  # a Saturday
    assert cal.krx_windows(THU) == [] and not cal.is_trading_day(THU)


def test_special_days_move_the_sessions() -> None:
    exam = date(2026, 11, 19)
    cal = Calendar(special={exam: EXAM_DAY})
    assert cal.krx_phase(at(exam, "09:30")) is Phase.PRE_HOURS_CLOSE  # moved with the open
    assert cal.krx_phase(at(exam, "09:45")) is Phase.OPENING_AUCTION
    assert cal.krx_phase(at(exam, "10:00")) is Phase.REGULAR
    assert cal.krx_phase(at(exam, "16:19")) is Phase.REGULAR
    assert cal.krx_phase(at(exam, "16:20")) is Phase.CLOSING_AUCTION
    assert cal.krx_phase(at(exam, "17:00")) is Phase.AFTER_HOURS_SINGLE
    assert cal.nxt_phase(at(exam, "09:30")) is Phase.MAIN  # only KRX moves
    late = date(2026, 12, 2)
    cal = Calendar(special={late: SpecialDay(30, 0, "a late open")})
    assert cal.krx_phase(at(late, "09:10")) is Phase.OPENING_AUCTION
    assert cal.krx_phase(at(late, "09:30")) is Phase.REGULAR
    assert cal.krx_phase(at(late, "15:20")) is Phase.CLOSING_AUCTION  # the close stays


def test_the_first_trading_day_of_a_year_opens_at_ten() -> None:
    cal = Calendar(holidays=frozenset({date(2027, 1, 1)}))  # a Friday, New Year's Day
    first = date(2027, 1, 4)  # the Monday after
    assert cal.special_day(first) is not None
    assert cal.krx_phase(at(first, "09:45")) is Phase.OPENING_AUCTION
    assert cal.krx_phase(at(first, "10:00")) is Phase.REGULAR
    assert cal.special_day(date(2027, 1, 5)) is None
    assert Calendar(first_day_late=False).special_day(first) is None


def test_the_next_change_for_a_timer() -> None:
    cal = Calendar(holidays=frozenset({date(2026, 12, 7)}))  # a Monday off
    assert cal.next_change(at(THU, "09:10")) == at(THU, "15:20")
    assert cal.next_change(at(THU, "08:45")) == at(THU, "08:50")  # NXT's pre-market ends
    friday_night = at(date(2026, 12, 4), "21:00")
    assert cal.next_change(friday_night) == at(date(2026, 12, 8), "08:00")  # after the weekend


def test_the_brokers_holiday_rows() -> None:
    rows = [
        {"bass_dt": "20250101", "wday_dvsn_cd": "04", "bzdy_yn": "N", "opnd_yn": "N"},
        {"bass_dt": "20250102", "wday_dvsn_cd": "05", "bzdy_yn": "Y", "opnd_yn": "Y"},
        {"bass_dt": "2025-01-03", "opnd_yn": "Y"},  # unreadable: left out
        {"bass_dt": "20250104"},  # no flag: left out
    ]
    opened = parse_holidays(rows)
    assert opened == {date(2025, 1, 1): False, date(2025, 1, 2): True}
    cal = Calendar.from_broker(opened, extra_holidays=[date(2025, 1, 3)])
    assert cal.holidays == frozenset({date(2025, 1, 1), date(2025, 1, 3)})
    assert cal.krx_phase(at(date(2025, 1, 2), "10:00")) is Phase.REGULAR  # the first day


def test_an_auctions_single_print_is_known_as_one() -> None:
    cal = Calendar()
    assert cal.auction_print(at(THU, "15:30:00")) and cal.auction_print(at(THU, "15:30:01"))
    assert cal.auction_print(at(THU, "09:00:00"))
    assert not cal.auction_print(at(THU, "15:19:59"))  # continuous trading
    assert not cal.auction_print(at(THU, "09:00:05"))
    assert not cal.auction_print(at(date(2026, 12, 5), "15:30:00"))  # a Saturday


def test_a_move_completed_by_an_auction_print_raises_no_alert() -> None:
    from msgspec.structs import replace

    from tests.store.test_writer import events
    from tradestream.detect.movers import MoverScanner
    from tradestream.detect.sudden import SuddenMoveDetector
    from tradestream.events import Tick
    from tradestream.pipeline.detection import TickDetectors

    base = next(e for e in events() if isinstance(e, Tick))

    def run(auction_aware: bool) -> tuple[list[object], int]:
        det = TickDetectors(SuddenMoveDetector(window_s=60, threshold=0.05), MoverScanner())
        if auction_aware:
            det.auction_print = Calendar().auction_print
        ns = 1_000_000_000
        out = [
            det(replace(base, price=70_000, trade_time=at(THU, "15:19:50"), received_ns=ns)),
            # the closing auction's single print, 6 % up, 40 s later by the clock
            det(replace(base, price=74_200, trade_time=at(THU, "15:30:00"), received_ns=41 * ns)),
        ]
        return [a for a in out if a is not None], det.auction_skipped

    assert run(auction_aware=False)[0]  # the detector alone takes it for a move
    assert run(auction_aware=True) == ([], 1)
