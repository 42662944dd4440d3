"""The broker's daily bars cached in the store for the daily VCP scan: at start and every
`every_s`, each slotted code's days since the last stored one (up to HISTORY_DAYS back) are
fetched through the shared REST client (kis-rest.md §6.3) and kept; a code already up to date
costs one local query, no call."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy.exc
import trio
from sqlalchemy.engine import Engine

from tradestream.events import KST
from tradestream.feeds.kis.rest import KisRest, KisRestError
from tradestream.store.daily import last_day, store_daily

log = logging.getLogger(__name__)

HISTORY_DAYS = 300  # calendar days fetched for a code seen for the first time (~200 sessions)
EVERY_S = 600.0  # a look at every slotted code: a new one (a find, a holding) is fetched soon


@dataclass
class DailyStats:
    rounds: int = 0
    codes: int = 0  # codes brought up to date in the last round
    bars: int = 0  # stored, ever
    failures: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


async def run_daily_bars(
    rest: KisRest,
    engine: Engine,
    codes: Callable[[], Sequence[str]],
    stats: DailyStats,
    *,
    every_s: float = EVERY_S,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    while True:
        yesterday = datetime.now(KST).date() - timedelta(days=1)
        done = 0
        for code in list(codes()):
            try:
                last = await trio.to_thread.run_sync(last_day, engine, code)
                first = last + timedelta(days=1) if last else yesterday - timedelta(HISTORY_DAYS)
                if first > yesterday:
                    done += 1
                    continue
                rows = await rest.daily_bars(code, first, yesterday)
                stats.bars += await trio.to_thread.run_sync(store_daily, engine, code, rows)
                done += 1
            except (KisRestError, sqlalchemy.exc.SQLAlchemyError) as exc:
                stats.failures += 1
                stats.last_error = str(exc)[:300]
                log.warning("daily bars of %s: %s", code, exc)
        stats.rounds += 1
        stats.codes = done
        await trio.sleep(every_s)
