"""Which minutes of a feed gap the broker's minute-bar TR can give (pipeline/backfill.py)."""

from __future__ import annotations

from datetime import date, datetime

from tradestream.events import KST
from tradestream.pipeline.backfill import Window, backfill_window


def k(day: int, h: int, m: int, s: int = 0) -> datetime:
    return datetime(2025, 1, day, h, m, s, tzinfo=KST)  # 2025-01-02 is a Thursday


def test_every_minute_the_gap_touches() -> None:
    w = backfill_window(k(2, 10, 0, 30), k(2, 10, 4, 10))
    assert (w.first, w.last, w.status) == (k(2, 10, 0), k(2, 10, 4), "done")
    exact = backfill_window(k(2, 10, 1), k(2, 10, 3))  # ends as 10:03 begins
    assert (exact.first, exact.last) == (k(2, 10, 1), k(2, 10, 2))


def test_short_gaps_a_closed_market_and_the_session_edges() -> None:
    assert backfill_window(k(2, 10, 0, 10), k(2, 10, 0, 50)) == Window(
        k(2, 10, 0), k(2, 10, 0), "done", ""
    )
    assert backfill_window(k(2, 16, 0), k(2, 17, 0)).status == "closed"
    assert backfill_window(k(4, 10, 0), k(4, 11, 0)).status == "closed"  # a Saturday
    holiday = backfill_window(k(2, 10, 0), k(2, 11, 0), holidays={date(2025, 1, 2)})
    assert holiday.status == "closed"
    w = backfill_window(k(2, 8, 30), k(2, 9, 5, 30))  # clipped to the opening
    assert (w.first, w.last) == (k(2, 9, 0), k(2, 9, 5))
    w = backfill_window(k(2, 15, 20, 30), k(2, 16, 0))  # clipped to the close
    assert (w.first, w.last) == (k(2, 15, 20), k(2, 15, 29))
    anytime = backfill_window(k(4, 22, 0), k(4, 22, 3), always_open=True)
    assert (anytime.first, anytime.last, anytime.status) == (k(4, 22, 0), k(4, 22, 2), "done")
    assert backfill_window(k(2, 10, 0), k(2, 10, 0)).status == "closed"  # empty


def test_a_gap_from_yesterday_is_beyond_reach_in_part_or_whole() -> None:
    w = backfill_window(k(1, 14, 0), k(2, 9, 3))
    assert (w.first, w.last, w.status) == (k(2, 9, 0), k(2, 9, 2), "partial")
    assert "beyond the minute-bar TR's reach" in w.detail
    none = backfill_window(k(1, 14, 0), k(2, 8, 0))
    assert (none.first, none.status) == (None, "beyond_reach")
