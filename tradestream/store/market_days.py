"""The broker's market calendar in the store (chk-holiday's `opnd_yn` per date), so that the
broker, which asks for about one call a day, is asked at most once a day across restarts.
Synchronous (SQLAlchemy Core): call from a worker thread. A date asked again is replaced (a
holiday may be declared after it was first seen open)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tradestream.store.schema import market_days as table


def save_market_days(engine: Engine, days: Mapping[date, bool], fetched_on: date) -> None:
    if not days:
        return
    with engine.begin() as conn:
        conn.execute(table.delete().where(table.c.day.in_(list(days))))
        conn.execute(
            table.insert(),
            [{"day": d, "is_open": o, "fetched_on": fetched_on} for d, o in days.items()],
        )


def load_market_days(engine: Engine) -> tuple[dict[date, bool], date | None]:
    """Every cached date, and the day of the last fetch (None: never)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.day, table.c.is_open, table.c.fetched_on)).all()
    days = {r.day: bool(r.is_open) for r in rows}
    return days, max((r.fetched_on for r in rows), default=None)
