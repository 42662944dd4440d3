"""`market:session` (pipeline/session.py) on Trio's mock clock: the phase at start, then a
message at each change, and a calendar that falls back when the broker cannot be asked."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import msgspec
import trio
import trio.testing

from tradestream import topics
from tradestream.events import KST
from tradestream.hub import Hub
from tradestream.pipeline.session import calendar_from_broker, run_session_clock
from tradestream.pipeline.stages import MarketState
from tradestream.session_calendar import Calendar


def phase(state: MarketState) -> tuple[str, str]:
    data = msgspec.json.decode(state.last[topics.MARKET_SESSION].payload)["data"]
    return data["krx"], data["nxt"]


async def test_the_phase_at_start_and_at_each_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    base = datetime(2026, 12, 3, 15, 19, 50, tzinfo=KST)  # a Thursday, just before the auction
    t0 = trio.current_time()
    hub, state = Hub(), MarketState()
    seen: list[tuple[str, str]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status=trio.TASK_STATUS_IGNORED: run_session_clock(
                Calendar(),
                hub,
                state,
                now=lambda: base + timedelta(seconds=trio.current_time() - t0),
                task_status=task_status,
            )
        )
        seen.append(phase(state))
        for _ in range(4):  # 15:20, 15:30, 15:40, 16:00
            before = state.last[topics.MARKET_SESSION]
            while state.last[topics.MARKET_SESSION] is before:  # noqa: ASYNC110
                await trio.sleep(1)  # the mock clock jumps
            seen.append(phase(state))
        elapsed = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    assert seen == [
        ("regular", "main"),
        ("closing_auction", "closed"),
        ("closed", "after_market"),
        ("after_hours_close", "after_market"),
        ("after_hours_single", "after_market"),
    ]
    assert 40 * 60 < elapsed < 41 * 60  # 15:19:50 -> 16:00, woken at the edges only


async def test_a_broker_that_cannot_answer_leaves_the_configured_holidays() -> None:
    async def fails(_: date) -> dict[date, bool]:
        raise OSError("unreachable")

    async def answers(_: date) -> dict[date, bool]:
        return {date(2026, 12, 25): False, date(2026, 12, 24): True}

    configured = [date(2026, 12, 31)]
    fallback = await calendar_from_broker(fails, configured, date(2026, 12, 21))
    assert fallback.holidays == frozenset(configured)
    merged = await calendar_from_broker(answers, configured, date(2026, 12, 21))
    assert merged.holidays == frozenset({date(2026, 12, 25), date(2026, 12, 31)})
