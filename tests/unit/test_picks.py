"""Scheduled daily picks: the source formats, the schedule over weekends and holidays, and the
refresh task on trio's MockClock with an injected wall clock."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
import trio
import trio.testing

from tradestream.events import KST
from tradestream.slots.picks import Picks, next_run, parse_at, parse_picks, pick_keys
from tradestream.slots.schedule import RETRY_S, run_scheduled_picks


def test_sources_in_json_and_csv() -> None:
    assert parse_picks('{"codes": ["005930", "000660"], "orderbook": ["005930"]}') == Picks(
        ("005930", "000660"), ("005930",)
    )
    assert parse_picks('["005930", "005930"]') == Picks(("005930",))  # duplicates once
    csv = "# today\n005930, orderbook\n000660\n035420,005380  # two on a line\n"
    assert parse_picks(csv) == Picks(("005930", "000660", "035420", "005380"), ("005930",))
    for bad in ('{"codes": "005930"}', '["59"]', "", "# nothing", '{"codes": [], "orderbook": 1}'):
        with pytest.raises(ValueError):
            parse_picks(bad)
    assert parse_at("07:20") == time(7, 20)
    with pytest.raises(ValueError):
        parse_at("7h20")
    kept = (("H0UPCNT0", "0001"),)
    assert pick_keys(Picks(("005930",), ("005930",)), kept, "T", "B") == [
        ("T", "005930"),
        ("B", "005930"),
        ("H0UPCNT0", "0001"),
    ]


def test_next_run_skips_weekends_holidays_and_the_past() -> None:
    at = time(7, 20)
    fri = datetime(2026, 12, 4, 6, 0, tzinfo=KST)  # a Friday, before 07:20
    assert next_run(fri, at) == datetime(2026, 12, 4, 7, 20, tzinfo=KST)
    later = fri.replace(hour=7, minute=20)  # exactly at: the next trading day
    assert next_run(later, at) == datetime(2026, 12, 7, 7, 20, tzinfo=KST)  # Monday
    holiday = {date(2026, 12, 7)}
    assert next_run(later, at, holiday) == datetime(2026, 12, 8, 7, 20, tzinfo=KST)


async def test_the_refresh_applies_at_0720_on_trading_days_and_retries_a_bad_source(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = datetime(2026, 12, 4, 6, 0, tzinfo=KST)  # Friday 06:00

    def now() -> datetime:  # the wall clock, driven by trio's virtual one
        return start + timedelta(seconds=trio.current_time())

    texts = iter(["000270", "005930,000660", "not a code", "035420"])
    reads: list[datetime] = []
    applied: list[tuple[datetime, Picks]] = []

    async def read(source: str) -> str:
        assert source == "picks.csv"
        reads.append(now())
        return next(texts)

    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: run_scheduled_picks(
                "picks.csv",
                time(7, 20),
                {date(2026, 12, 7)},  # Monday a holiday
                lambda p: applied.append((now(), p)),
                now=now,
                read=read,
                task_status=task_status,
            )
        )
        while len(applied) < 3:  # noqa: ASYNC110  (virtual time: each sleep jumps ahead)
            await trio.sleep(3600)
        nursery.cancel_scope.cancel()
    at = datetime(2026, 12, 4, 7, 20, tzinfo=KST)
    tuesday = datetime(2026, 12, 8, 7, 20, tzinfo=KST)
    # at start (a service started at 06:00 runs on today's list), then each trading morning
    assert [t for t, _ in applied] == [start, at, tuesday + timedelta(seconds=RETRY_S)]
    assert [p.codes for _, p in applied] == [("000270",), ("005930", "000660"), ("035420",)]
    assert reads == [start, at, tuesday, tuesday + timedelta(seconds=RETRY_S)]  # a bad source
