"""`market:session`: the trading day's phase on KRX and NXT (session_calendar.py), published
at start and again at every change of phase, as a conflatable topic (a new subscriber gets
the current phase as its snapshot).

The calendar is the configured holidays and special days, with the broker's market days
(chk-holiday) when a real account's REST client is there: asked at most once a day (the broker
asks for about one call a day), kept in the store across restarts; a failed call keeps the
cached and configured calendar, logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import date, datetime

import trio
from sqlalchemy.engine import Engine

from tradestream import topics, wire
from tradestream.events import KST
from tradestream.hub import Hub, Msg
from tradestream.pipeline.stages import MarketState
from tradestream.session_calendar import Calendar, SpecialDay, session_data
from tradestream.store.market_days import load_market_days, save_market_days

log = logging.getLogger(__name__)

MIN_WAIT_S = 0.05
ASK_TIMEOUT_S = 10.0  # the wall clock may lag the timer: never spin on an edge


async def calendar_from_broker(
    market_days: Callable[[date], Awaitable[dict[date, bool]]] | None,
    holidays: Iterable[date],
    today: date,
    *,
    engine: Engine | None = None,
    special: Mapping[date, SpecialDay] | None = None,
) -> Calendar:
    """The configured holidays and special days, and the broker's closed days: from the
    store when they were fetched today, else asked (and stored); a failed call falls back to
    what the store has, then to the configured ones."""
    opened: dict[date, bool] = {}
    fetched: date | None = None
    if engine is not None:
        opened, fetched = await trio.to_thread.run_sync(load_market_days, engine)
    if market_days is not None and fetched != today:
        try:
            with trio.fail_after(ASK_TIMEOUT_S):  # the intake does not wait on a slow broker
                answer = await market_days(today)
        except Exception as exc:  # noqa: BLE001  (a timeout too: the cache or config serves)
            log.warning("market days from the broker failed (%r): %s", exc,
                        "the cached ones" if opened else "configured holidays only")  # fmt: skip
        else:
            opened.update(answer)
            if engine is not None:
                await trio.to_thread.run_sync(save_market_days, engine, answer, today)
    return Calendar.from_broker(opened, extra_holidays=holidays, special=special)


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
