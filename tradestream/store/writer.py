"""Synchronous SQL writes through SQLAlchemy Core; called from a worker thread.

Inserts are idempotent on each table's natural key (ON CONFLICT DO NOTHING on SQLite and
PostgreSQL, ON DUPLICATE KEY UPDATE id = id on MariaDB/MySQL), so a batch may be written twice
safely: after a reconnect that re-sends trades, or a retry whose first attempt did commit.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.pool import ConnectionPoolEntry

from tradestream.errors import Fenced
from tradestream.events import (
    Alert,
    Backfill,
    Event,
    Execution,
    FeedGap,
    IndexTick,
    MinuteBar,
    News,
    OrderBook,
    ProgramTrade,
    Signal,
    SlotAudit,
    Tick,
)
from tradestream.store import schema

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 30  # a hung server must fail a write, not stall the writer for ever


def make_engine(url: str) -> Engine:
    """An engine with per-backend settings: WAL and a busy timeout on SQLite; connect and
    statement timeouts on PostgreSQL and MariaDB, so an outage surfaces as an error."""
    backend = sa.engine.make_url(url).get_backend_name()
    connect_args: dict[str, object] = {}
    if backend == "postgresql":
        # statement_timeout is the server's; keepalives and tcp_user_timeout cover a network
        # partition, where the server cannot tell us anything.
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": STATEMENT_TIMEOUT_S * 1000,
        }
    elif backend in ("mysql", "mariadb"):
        connect_args = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "read_timeout": STATEMENT_TIMEOUT_S,
            "write_timeout": STATEMENT_TIMEOUT_S,
            "charset": "utf8mb4",
        }
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


def transient(exc: BaseException) -> bool:
    """An outage (retry later) rather than rows the database refuses (retrying cannot help).
    A fenced write is held like an outage: its rows are kept (spooled at the stop), never set
    aside as bad."""
    if isinstance(exc, Fenced):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, (sa.exc.OperationalError, sa.exc.InterfaceError)
        )
    return isinstance(exc, (sa.exc.TimeoutError, OSError, TimeoutError))


def idempotent_insert(engine: Engine, table: sa.Table) -> sa.Insert:
    name = engine.dialect.name
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    if name in ("mysql", "mariadb"):
        # Not INSERT IGNORE: that also turns data errors into warnings and stores clamped or
        # truncated values. A no-op update skips only the duplicate.
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        return mysql_insert(table).on_duplicate_key_update(id=table.c.id)
    raise ValueError(f"unsupported database backend {name!r}")


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


def _received(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def tick_row(t: Tick) -> dict[str, object]:
    return {
        "stock_code": t.code,
        "venue": t.venue,
        "trade_time": _utc(t.trade_time),
        "price": t.price,
        "change": t.change,
        "change_percent": t.change_percent,
        "open": t.open,
        "high": t.high,
        "low": t.low,
        "trade_volume": t.trade_volume,
        "volume": t.volume,
        "source": t.source,
        "received_at": _received(t.received_ns),
    }


def orderbook_row(o: OrderBook) -> dict[str, object]:
    return {
        "stock_code": o.code,
        "venue": o.venue,
        "quote_time": _utc(o.quote_time),
        "ask1": o.ask_prices[0] if o.ask_prices else 0,
        "bid1": o.bid_prices[0] if o.bid_prices else 0,
        "ask_prices": list(o.ask_prices),
        "bid_prices": list(o.bid_prices),
        "ask_sizes": list(o.ask_sizes),
        "bid_sizes": list(o.bid_sizes),
        "total_ask_size": o.total_ask_size,
        "total_bid_size": o.total_bid_size,
        "expected_price": o.expected_price,
        "expected_volume": o.expected_volume,
        "volume": o.volume,
        "source": o.source,
        "received_at": _received(o.received_ns),
    }


def program_row(p: ProgramTrade) -> dict[str, object]:
    return {
        "stock_code": p.code,
        "venue": p.venue,
        "trade_time": _utc(p.trade_time),
        "sell_qty": p.sell_qty,
        "sell_value": p.sell_value,
        "buy_qty": p.buy_qty,
        "buy_value": p.buy_value,
        "net_qty": p.net_qty,
        "net_value": p.net_value,
        "sell_rest": p.sell_rest,
        "buy_rest": p.buy_rest,
        "net_rest": p.net_rest,
        "source": p.source,
        "received_at": _received(p.received_ns),
    }


def execution_row(e: Execution) -> dict[str, object]:
    return {
        "account": e.account,
        "customer_id": e.customer_id,
        "order_no": e.order_no,
        "original_order_no": e.original_order_no,
        "side": e.side,
        "kind": e.kind,
        "correction": e.correction,
        "rejected": e.rejected,
        "stock_code": e.code,
        "quantity": e.quantity,
        "price": e.price,
        "order_qty": e.order_qty,
        "order_price": e.order_price,
        "event_time": _utc(e.time),
        "name": e.name,
        "seq": e.seq,
        "source": e.source,
        "received_at": _received(e.received_ns),
    }


def news_row(n: News) -> dict[str, object]:
    return {
        "realkey": n.realkey,
        "title": n.title,
        "tickers": list(n.tickers),
        "ticker": n.ticker,
        "media_id": n.media_id,
        "media": n.media,
        "published_at": _utc(n.published_at),
        "body_size": n.body_size,
        "source": n.source,
        "received_at": _received(n.received_ns),
    }


def gap_row(g: FeedGap) -> dict[str, object]:
    return {
        "source": g.source,
        "started_at": _utc(g.start),
        "ended_at": _utc(g.end),
        "reason": g.reason[:300],
    }


def index_row(i: IndexTick) -> dict[str, object]:
    return {
        "index_code": i.code,
        "index_name": i.index,
        "event_time": _utc(i.time),
        "value": i.value,
        "change": i.change,
        "change_percent": i.change_percent,
        "volume": i.volume,
        "traded_value": i.traded_value,
        "advancers": i.advancers,
        "decliners": i.decliners,
        "unchanged": i.unchanged,
        "source": i.source,
        "received_at": _received(i.received_ns),
    }


def alert_row(a: Alert) -> dict[str, object]:
    return {
        "stock_code": a.code,
        "kind": a.kind,
        "direction": a.direction,
        "change_percent": a.change_percent,
        "price": a.price,
        "reference_price": a.reference_price,
        "window_s": a.window_s,
        "triggered_at": _utc(a.triggered_at),
        "message": a.message[:300],
        "source": a.source,
        "received_at": _received(a.received_ns),
    }


def signal_row(s: Signal) -> dict[str, object]:
    return {
        "kind": s.kind[:32],
        "strategy": s.strategy[:64],
        "stock_code": s.code[:12],
        "payload": s.payload,
        "created_at": _utc(s.created_at),
        "source": s.source[:32],
    }


def slot_audit_row(a: SlotAudit) -> dict[str, object]:
    return {
        "at": _utc(a.at),
        "action": a.action,
        "session": a.session,
        "tr_id": a.tr_id,
        "stock_code": a.code,
        "priority": a.priority,
        "reason": a.reason[:200],
    }


def bar_row(b: MinuteBar) -> dict[str, object]:
    return {
        "stock_code": b.code,
        "minute": _utc(b.minute),
        "open": b.open,
        "high": b.high,
        "low": b.low,
        "close": b.close,
        "volume": b.volume,
        "source": b.source,
        "received_at": _received(b.received_ns),
    }


def backfill_row(b: Backfill) -> dict[str, object]:
    return {
        "source": b.source,
        "started_at": _utc(b.start),
        "ended_at": _utc(b.end),
        "codes": b.codes,
        "bars": b.bars,
        "status": b.status,
        "detail": b.detail[:300],
    }


ROWS: dict[type, tuple[sa.Table, Callable[[Any], dict[str, object]]]] = {
    Tick: (schema.stock_prices_realtime, tick_row),
    OrderBook: (schema.orderbook_snapshots, orderbook_row),
    ProgramTrade: (schema.program_trades, program_row),
    Execution: (schema.executions, execution_row),
    News: (schema.news, news_row),
    FeedGap: (schema.feed_gaps, gap_row),
    IndexTick: (schema.index_ticks, index_row),
    Alert: (schema.alerts, alert_row),
    Signal: (schema.signals, signal_row),
    SlotAudit: (schema.slot_audit, slot_audit_row),
    MinuteBar: (schema.backfill_bars, bar_row),
    Backfill: (schema.backfills, backfill_row),
}


# The trade table is the bulk of every batch. Its rows skip SQLAlchemy's per-row parameter
# processing (most of the write cost, measured): the idempotent insert is compiled once per
# dialect and the driver's executemany gets plain tuples (sqlite3's C loop, psycopg's
# pipeline, PyMySQL's multi-row rewrite).
_TICK_COLUMNS = (
    "stock_code",
    "venue",
    "trade_time",
    "price",
    "change",
    "change_percent",
    "open",
    "high",
    "low",
    "trade_volume",
    "volume",
    "source",
    "received_at",
)


def _fast_tick_sql(dialect: str) -> str:
    cols = ", ".join(f'"{c}"' if dialect != "mysql" else f"`{c}`" for c in _TICK_COLUMNS)
    if dialect == "sqlite":
        marks = ", ".join("?" * len(_TICK_COLUMNS))
        return f"INSERT OR IGNORE INTO stock_prices_realtime ({cols}) VALUES ({marks})"
    marks = ", ".join(["%s"] * len(_TICK_COLUMNS))
    if dialect == "postgresql":
        return f"INSERT INTO stock_prices_realtime ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    return (
        f"INSERT INTO stock_prices_realtime ({cols}) VALUES ({marks}) "
        "ON DUPLICATE KEY UPDATE `id` = `id`"
    )


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's own storage format for SQLite DATETIME


def _fast_tick_row(dialect: str) -> Callable[[Tick], tuple[object, ...]]:
    if dialect == "postgresql":

        def when(dt: datetime) -> object:
            return dt.astimezone(UTC)
    elif dialect == "sqlite":

        def when(dt: datetime) -> object:
            return dt.astimezone(UTC).strftime(_SQLITE_TIME)
    else:  # MySQL/MariaDB: naive UTC

        def when(dt: datetime) -> object:
            return dt.astimezone(UTC).replace(tzinfo=None)

    def row(t: Tick) -> tuple[object, ...]:
        return (
            t.code,
            t.venue,
            when(t.trade_time),
            t.price,
            t.change,
            t.change_percent,
            t.open,
            t.high,
            t.low,
            t.trade_volume,
            t.volume,
            t.source,
            when(datetime.fromtimestamp(t.received_ns / 1e9, UTC)),
        )

    return row


_COLS_SQL = ", ".join(f'"{c}"' for c in _TICK_COLUMNS)
_LOAD_TABLE = (
    f"CREATE TEMP TABLE IF NOT EXISTS _spr_load ON COMMIT DELETE ROWS AS "
    f"SELECT {_COLS_SQL} FROM stock_prices_realtime WITH NO DATA"
)


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(s: str) -> str:
    """A text field in COPY's text format: backslash, tab, newline and CR escaped."""
    if _COPY_SPECIAL.search(s) is None:
        return s
    return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group()], s)


_iso = functools.lru_cache(maxsize=4096)(datetime.isoformat)  # a burst shares its seconds


def _copy_line(t: Tick) -> str:
    """One tick as a line of COPY's text format, in `_TICK_COLUMNS` order. Times are ISO 8601
    with their offset (the columns are timestamptz); ints and floats as Python prints them."""
    return (
        f"{_copy_text(t.code)}\t{_copy_text(t.venue)}\t{_iso(t.trade_time)}\t{t.price}\t"
        f"{t.change}\t{t.change_percent!r}\t{t.open}\t{t.high}\t{t.low}\t{t.trade_volume}\t"
        f"{t.volume}\t{_copy_text(t.source)}\t"
        f"{datetime.fromtimestamp(t.received_ns / 1e9, UTC).isoformat()}\n"
    )


def _copy_ticks(conn: sa.Connection, ticks: list[Tick]) -> None:
    """PostgreSQL bulk path: COPY into a per-session temp table (emptied at commit), then one
    INSERT ... SELECT ... ON CONFLICT DO NOTHING: COPY's speed, the insert's idempotency. The
    batch goes as one block of text lines (no per-row call into the driver)."""
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:  # type: ignore[union-attr]
        cur.execute(_LOAD_TABLE)
        with cur.copy(f"COPY _spr_load ({_COLS_SQL}) FROM STDIN") as copy:
            copy.write("".join([_copy_line(t) for t in ticks]))
        cur.execute(
            f"INSERT INTO stock_prices_realtime ({_COLS_SQL}) "
            f"SELECT {_COLS_SQL} FROM _spr_load ON CONFLICT DO NOTHING"
        )


class EventWriter:
    """Writes a batch of mixed events: one transaction, one multi-row insert per table."""

    def __init__(
        self,
        engine: Engine,
        *,
        bulk_copy: bool = True,
        guard: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        """`bulk_copy`: on PostgreSQL, ticks go in by COPY (else, as elsewhere, executemany).
        `guard(conn)` runs first in every batch's transaction and may refuse it by raising
        (the ingest lease's fence, store/fence.py)."""
        self.engine = engine
        self._guard = guard
        self._inserts = {
            cls: (idempotent_insert(engine, table), row) for cls, (table, row) in ROWS.items()
        }
        dialect = "mysql" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name
        self._tick_sql = _fast_tick_sql(dialect)
        self._tick_row = _fast_tick_row(dialect)
        self._copy = bulk_copy and dialect == "postgresql"

    def write(self, events: Sequence[Event]) -> None:
        ticks: list[Tick] = []
        others: dict[type, list[dict[str, object]]] = {}
        for ev in events:  # rows are built here, in the worker thread
            if type(ev) is Tick:
                ticks.append(ev)
            else:
                others.setdefault(type(ev), []).append(self._inserts[type(ev)][1](ev))
        with self.engine.begin() as conn:
            if self._guard is not None:
                self._guard(conn)
            if ticks and self._copy:
                _copy_ticks(conn, ticks)
            elif ticks:
                tick_row = self._tick_row
                conn.exec_driver_sql(self._tick_sql, [tick_row(t) for t in ticks])
            for cls, rows in others.items():
                conn.execute(self._inserts[cls][0], rows)
