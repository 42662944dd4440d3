"""`market:session`: the trading day's phase on KRX and NXT (session_calendar.py), published
at start and again at every change of phase, as a conflatable topic (a new subscriber gets
the current phase as its snapshot).

The calendar is the configured holidays and special days, with the broker's market days
(chk-holiday, one call at start: the broker asks for about one a day) when a real account's
REST client is there; a failed call keeps the configured calendar, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime

import trio

from tradestream import topics, wire
from tradestream.events import KST
from tradestream.hub import Hub, Msg
from tradestream.pipeline.stages import MarketState
from tradestream.session_calendar import Calendar, session_data

log = logging.getLogger(__name__)

MIN_WAIT_S = 0.05  # the wall clock may lag the timer: never spin on an edge


async def calendar_from_broker(
    market_days: Callable[[date], Awaitable[dict[date, bool]]] | None,
    holidays: Iterable[date],
    today: date,
) -> Calendar:
    """The configured holidays, and the broker's closed days when it can be asked."""
    opened: dict[date, bool] = {}
    if market_days is not None:
        try:
            opened = await market_days(today)
        except Exception as exc:  # noqa: BLE001  (the configured calendar still serves)
            log.warning("market days from the broker failed (%r): configured holidays only", exc)
    return Calendar.from_broker(opened, extra_holidays=holidays)


async def run_session_clock(
    cal: Calendar,
    hub: Hub,
    state: MarketState,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(KST),
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Publish the phase now and at every change, until cancelled."""
    started = False
    while True:
        t = now()
        msg = Msg(wire.market_session(session_data(cal, t)), "market_session")
        state.last[topics.MARKET_SESSION] = msg
        hub.publish_latest(topics.MARKET_SESSION, msg)
        if not started:
            task_status.started()
            started = True
        await trio.sleep(max((cal.next_change(t) - t).total_seconds(), MIN_WAIT_S))
