"""The broker's market calendar in the store (store/market_days.py) on every backend, and the
session calendar asking the broker at most once a day through it (pipeline/session.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import trio

from tradestream.pipeline.session import calendar_from_broker
from tradestream.session_calendar import SpecialDay
from tradestream.store import migrate
from tradestream.store.market_days import load_market_days, save_market_days
from tradestream.store.writer import make_engine

XMAS, EVE = date(2026, 12, 25), date(2026, 12, 24)


def test_round_trip_and_a_date_asked_again_is_replaced(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate.upgrade(engine)
        assert load_market_days(engine) == ({}, None)
        save_market_days(engine, {EVE: True, XMAS: True}, date(2026, 12, 1))
        save_market_days(engine, {XMAS: False}, date(2026, 12, 2))  # declared a holiday later
        assert load_market_days(engine) == ({EVE: True, XMAS: False}, date(2026, 12, 2))
    finally:
        engine.dispose()


async def test_the_broker_is_asked_at_most_once_a_day(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'cal.db'}")
    await trio.to_thread.run_sync(migrate.upgrade, engine)
    asked: list[date] = []
    fail = False

    async def market_days(base: date) -> dict[date, bool]:
        asked.append(base)
        if fail:
            raise OSError("the broker is away")
        return {EVE: True, XMAS: False}

    today = date(2026, 12, 21)
    first = await calendar_from_broker(market_days, [], today, engine=engine)
    again = await calendar_from_broker(market_days, [], today, engine=engine)  # a restart
    fail = True
    tomorrow = await calendar_from_broker(
        market_days,
        [date(2026, 12, 31)],
        date(2026, 12, 22),
        engine=engine,
        special={EVE: SpecialDay(0, -60, "configured")},
    )
    engine.dispose()
    assert asked == [today, date(2026, 12, 22)]  # not again on the 21st
    assert first.holidays == again.holidays == frozenset({XMAS})
    assert tomorrow.holidays == frozenset({XMAS, date(2026, 12, 31)})  # the cache, when away
    assert tomorrow.special_day(EVE) == SpecialDay(0, -60, "configured")
