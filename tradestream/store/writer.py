"""Synchronous SQL writes through SQLAlchemy Core; called from a worker thread.

Inserts are idempotent on each table's natural key (ON CONFLICT DO NOTHING on SQLite and
PostgreSQL, INSERT IGNORE on MariaDB/MySQL), so a batch may be written twice safely: after a
reconnect that re-sends trades, or a retry whose first attempt did commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tradestream.events import Tick
from tradestream.store.schema import stock_prices_realtime


def make_engine(url: str) -> Engine:
    """An engine with per-backend settings: WAL and a busy timeout on SQLite."""
    engine = sa.create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


def idempotent_insert(engine: Engine, table: sa.Table) -> sa.Insert:
    name = engine.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if name in ("mysql", "mariadb"):
        return table.insert().prefix_with("IGNORE")
    raise ValueError(f"unsupported database backend {name!r}")


def tick_row(t: Tick) -> dict[str, object]:
    return {
        "stock_code": t.code,
        "venue": t.venue,
        "trade_time": t.trade_time.astimezone(UTC),
        "price": t.price,
        "change": t.change,
        "change_percent": t.change_percent,
        "open": t.open,
        "high": t.high,
        "low": t.low,
        "trade_volume": t.trade_volume,
        "volume": t.volume,
        "source": t.source,
        "received_at": datetime.fromtimestamp(t.received_ns / 1e9, UTC),
    }


class TickWriter:
    """Writes batches of ticks to `stock_prices_realtime` in one transaction each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = idempotent_insert(engine, stock_prices_realtime)

    def write(self, ticks: Sequence[Tick]) -> None:
        rows = [tick_row(t) for t in ticks]  # built here, in the worker thread
        with self.engine.begin() as conn:
            conn.execute(self._insert, rows)
