"""Daily bars in the store (the broker's, for the daily VCP scan). Synchronous (SQLAlchemy
Core): call from a worker thread. Past days do not change, so a day stored once is kept."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tradestream.store.schema import daily_bars
from tradestream.store.writer import idempotent_insert

DayRow = tuple[date, int, int, int, int, int]  # day, open, high, low, close, volume


def store_daily(engine: Engine, code: str, rows: Sequence[DayRow]) -> int:
    if not rows:
        return 0
    items = [
        {"stock_code": code, "day": d, "open": o, "high": h, "low": lo, "close": c, "volume": v}
        for d, o, h, lo, c, v in rows
    ]
    with engine.begin() as conn:
        conn.execute(idempotent_insert(engine, daily_bars), items)
    return len(items)


def last_day(engine: Engine, code: str) -> date | None:
    with engine.connect() as conn:
        found: Any = conn.execute(
            sa.select(sa.func.max(daily_bars.c.day)).where(daily_bars.c.stock_code == code)
        ).scalar_one_or_none()
    return found


def recent_daily(engine: Engine, code: str, limit: int) -> list[DayRow]:
    """The code's last `limit` daily bars, oldest first."""
    t = daily_bars
    q = (
        sa.select(t.c.day, t.c.open, t.c.high, t.c.low, t.c.close, t.c.volume)
        .where(t.c.stock_code == code)
        .order_by(t.c.day.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(q)]
    return [(r[0], int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows[::-1]]
