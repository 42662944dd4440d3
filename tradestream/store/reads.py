"""Queries behind the REST reads: recent trades, OHLCV bars, news, alerts. Synchronous
SQLAlchemy Core (call from a worker thread); results are plain JSON-ready dicts, times ISO 8601
in KST."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from tradestream.events import KST, Execution
from tradestream.store import schema

MAX_ROWS = 1000
MAX_INTERVAL_S = 366 * 86400
KST_OFFSET_S = 9 * 3600  # bars are aligned to midnight KST (no daylight saving in Korea)
_INTERVAL = re.compile(r"(\d+)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> int:
    """'30s', '1m', '5m', '1h', '1d' -> seconds; ValueError otherwise."""
    m = _INTERVAL.fullmatch(text)
    if m is None or int(m.group(1)) == 0 or len(m.group(1)) > 4:
        raise ValueError(f"interval must look like 30s, 1m, 1h or 1d, not {text!r}")
    seconds = int(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds > MAX_INTERVAL_S:
        raise ValueError("interval is at most 366d")
    return seconds


def _utc(dt: datetime) -> datetime:
    # SQLite and MariaDB hand back naive UTC; PostgreSQL an aware timestamp.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso(dt: datetime) -> str:
    return _utc(dt).astimezone(KST).isoformat()


def _bound(dt: datetime) -> datetime:
    """A query bound in the form each backend compares correctly: naive UTC works for all."""
    return _utc(dt).replace(tzinfo=None)


def recent_ticks(
    engine: Engine, code: str, since: datetime | None, limit: int
) -> list[dict[str, Any]]:
    """Trades of `code` from `since` on (oldest first), or the latest `limit` ones."""
    t = schema.stock_prices_realtime
    q = sa.select(
        t.c.trade_time,
        t.c.price,
        t.c.change,
        t.c.change_percent,
        t.c.trade_volume,
        t.c.volume,
        t.c.venue,
    ).where(t.c.stock_code == code)
    limit = max(1, min(limit, MAX_ROWS))
    if since is not None:
        q = q.where(t.c.trade_time >= _bound(since)).order_by(t.c.trade_time, t.c.id).limit(limit)
    else:
        q = q.order_by(t.c.trade_time.desc(), t.c.id.desc()).limit(limit)
    with engine.connect() as conn:
        rows = list(conn.execute(q))
    if since is None:
        rows.reverse()
    return [
        {
            "time": _iso(r.trade_time),
            "price": r.price,
            "change": r.change,
            "change_percent": r.change_percent,
            "trade_volume": r.trade_volume,
            "volume": r.volume,
            "venue": r.venue,
        }
        for r in rows
    ]


def bucket_start(dt: datetime, interval_s: int) -> datetime:
    """The start of the bar holding `dt`; bars are aligned to midnight KST."""
    local = _utc(dt).astimezone(KST)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    into = int((local - midnight).total_seconds()) // interval_s * interval_s
    if interval_s >= 86400:
        days = (midnight.date() - datetime(1970, 1, 1).date()).days
        midnight -= timedelta(days=days % (interval_s // 86400))
        into = 0
    return midnight + timedelta(seconds=into)


def ohlcv(trades: Iterable[tuple[datetime, int, int]], interval_s: int) -> list[dict[str, Any]]:
    """Bars from (time, price, trade volume) in time order (pure): the reference arithmetic
    that `bars()`, which has the database aggregate, is tested against."""
    bars: list[dict[str, Any]] = []
    current: datetime | None = None
    for when, price, qty in trades:
        start = bucket_start(when, interval_s)
        if start != current:
            current = start
            bars.append(
                {
                    "time": start.isoformat(),
                    "open": price,
                    "high": price,
                    "low": price,
                    "close": price,
                    "volume": 0,
                    "trades": 0,
                }
            )
        bar = bars[-1]
        bar["high"] = max(bar["high"], price)
        bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["volume"] += qty
        bar["trades"] += 1
    return bars


class _epoch_s(FunctionElement[int]):
    """Whole seconds since 1970-01-01 of a stored (UTC) timestamp, on each backend."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(_epoch_s, "sqlite")
def _epoch_s_sqlite(element: _epoch_s, compiler: Any, **kw: Any) -> str:
    # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff'; strftime would round .9995 s up (it
    # keeps milliseconds), so the fraction is cut off first
    return (
        f"CAST(strftime('%s', substr({compiler.process(element.clauses, **kw)}, 1, 19)) AS INTEGER)"
    )


@compiles(_epoch_s, "postgresql")
def _epoch_s_pg(element: _epoch_s, compiler: Any, **kw: Any) -> str:
    # FLOOR: a cast alone would round 09:00:59.6 into the next minute
    return f"CAST(FLOOR(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)})) AS BIGINT)"


@compiles(_epoch_s, "mysql")
@compiles(_epoch_s, "mariadb")
def _epoch_s_mysql(element: _epoch_s, compiler: Any, **kw: Any) -> str:
    # not UNIX_TIMESTAMP(), which reads a DATETIME in the session's time zone
    return (
        f"TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', {compiler.process(element.clauses, **kw)})"
    )


class _idiv(FunctionElement[int]):
    """Integer division of non-negative integers (MySQL's / would give a decimal)."""

    type = sa.BigInteger()
    inherit_cache = True


@compiles(_idiv)
def _idiv_default(element: _idiv, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"(({a}) / ({b}))"


@compiles(_idiv, "mysql")
@compiles(_idiv, "mariadb")
def _idiv_mysql(element: _idiv, compiler: Any, **kw: Any) -> str:
    a, b = (compiler.process(c, **kw) for c in element.clauses)
    return f"(({a}) DIV ({b}))"


def _bucket(local_s: ColumnElement[int], interval_s: int) -> ColumnElement[int]:
    """The bar start, in seconds of KST wall time since the epoch, as `bucket_start` does it:
    intervals under a day restart at each midnight, longer ones count whole days from the
    epoch."""
    day = sa.literal(86400, sa.BigInteger)
    step = sa.literal(interval_s, sa.BigInteger)
    if interval_s >= 86400:
        return _idiv(local_s, step) * step
    midnight = _idiv(local_s, day) * day
    return midnight + _idiv(local_s - midnight, step) * step


def bars(
    engine: Engine,
    code: str,
    interval_s: int,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[dict[str, Any]]:
    """OHLCV bars of `code` computed from stored trades, with the minutes a feed gap touched
    taken from the broker's minute bars (`backfill_bars`, which supersede the trades streamed
    in those minutes: the broker's bar has them all): those in the `limit` intervals before
    `until` (default now), or from `since` on (the newest `limit` of them). Intervals with
    neither have no bar; a bar with backfilled minutes says `"backfilled": true`.

    The database aggregates the trades (a window function picks each bar's first and last
    trade), so a request costs its bars, not its trades, however busy the code."""
    limit = max(1, min(limit, MAX_ROWS))
    until = until or datetime.now(UTC)
    since = since or until - timedelta(seconds=interval_s * limit)
    f = schema.backfill_bars
    filled = (
        sa.select(f.c.minute, f.c.open, f.c.high, f.c.low, f.c.close, f.c.volume)
        .where(f.c.stock_code == code, f.c.minute >= _bound(since), f.c.minute < _bound(until))
        .order_by(f.c.minute)
    )
    with engine.connect() as conn:
        minutes = list(conn.execute(filled))
    t = schema.stock_prices_realtime
    superseded = [
        sa.not_(sa.and_(t.c.trade_time >= _bound(lo), t.c.trade_time < _bound(hi)))
        for lo, hi in _runs([_ts(m.minute) for m in minutes])
    ]
    bucket = _bucket(_epoch_s(t.c.trade_time) + KST_OFFSET_S, interval_s).label("b")
    first = (
        sa.func.row_number()
        .over(partition_by=bucket, order_by=(t.c.trade_time, t.c.id))
        .label("rf")
    )
    last = (
        sa.func.row_number()
        .over(partition_by=bucket, order_by=(t.c.trade_time.desc(), t.c.id.desc()))
        .label("rl")
    )
    inner = (
        sa.select(bucket, t.c.price, t.c.trade_volume, t.c.trade_time, first, last)
        .where(
            t.c.stock_code == code,
            t.c.trade_time >= _bound(since),
            t.c.trade_time < _bound(until),
            *superseded,
        )
        .subquery()
    )
    q = (
        sa.select(
            inner.c.b,
            sa.func.max(sa.case((inner.c.rf == 1, inner.c.price))).label("open"),
            sa.func.max(inner.c.price).label("high"),
            sa.func.min(inner.c.price).label("low"),
            sa.func.max(sa.case((inner.c.rl == 1, inner.c.price))).label("close"),
            sa.func.sum(inner.c.trade_volume).label("volume"),
            sa.func.count().label("trades"),
            sa.func.min(inner.c.trade_time).label("first_at"),
            sa.func.max(inner.c.trade_time).label("last_at"),
        )
        .group_by(inner.c.b)
        .order_by(inner.c.b.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(q))
    # each bucket's pieces: its streamed trades (one piece, from its first to its last trade)
    # and its backfilled minutes; the bar opens with the earliest and closes with the latest
    pieces: dict[int, list[tuple[float, float, int, int, int, int, int, int, bool]]] = {}
    for r in rows:
        pieces.setdefault(int(r.b), []).append(
            (_ts(r.first_at), _ts(r.last_at), int(r.open), int(r.high), int(r.low),
             int(r.close), int(r.volume), int(r.trades), False)
        )  # fmt: skip
    for m in minutes:
        at = _ts(m.minute)
        b = (int(at) + KST_OFFSET_S) // interval_s * interval_s
        pieces.setdefault(b, []).append(
            (at, at + 60, int(m.open), int(m.high), int(m.low), int(m.close), int(m.volume),
             0, True)
        )  # fmt: skip
    out = []
    for b in sorted(pieces)[-limit:]:
        ps = pieces[b]
        bar: dict[str, Any] = {
            "time": datetime.fromtimestamp(b - KST_OFFSET_S, KST).isoformat(),
            "open": min(ps, key=lambda p: p[0])[2],
            "high": max(p[3] for p in ps),
            "low": min(p[4] for p in ps),
            "close": max(ps, key=lambda p: p[1])[5],
            "volume": sum(p[6] for p in ps),
            "trades": sum(p[7] for p in ps),
        }
        if any(p[8] for p in ps):
            bar["backfilled"] = True
        out.append(bar)
    return out


def _runs(starts: list[float]) -> list[tuple[datetime, datetime]]:
    """Consecutive minutes (their starts, epoch s, sorted) as [from, to) ranges."""
    out: list[tuple[float, float]] = []
    for at in starts:
        if out and out[-1][1] == at:
            out[-1] = (out[-1][0], at + 60)
        else:
            out.append((at, at + 60))
    return [(datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC)) for a, b in out]


def _ts(at: datetime) -> float:
    """Epoch seconds of a stored time (naive values are UTC, as stored)."""
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def recent_news(engine: Engine, ticker: str | None, limit: int) -> list[dict[str, Any]]:
    n = schema.news
    q = (
        sa.select(n)
        .order_by(n.c.published_at.desc(), n.c.id.desc())
        .limit(max(1, min(limit, MAX_ROWS)))
    )
    if ticker:
        # the primary ticker, or any listed one (the JSON array as text holds "005930")
        q = q.where(
            sa.or_(n.c.ticker == ticker, sa.cast(n.c.tickers, sa.Text).like(f'%"{ticker}"%'))
        )
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        {
            "realkey": r.realkey,
            "title": r.title,
            "tickers": r.tickers,
            "ticker": r.ticker,
            "media": r.media,
            "published_at": _iso(r.published_at),
        }
        for r in rows
    ]


def recent_alerts(engine: Engine, code: str | None, limit: int) -> list[dict[str, Any]]:
    a = schema.alerts
    q = (
        sa.select(a)
        .order_by(a.c.triggered_at.desc(), a.c.id.desc())
        .limit(max(1, min(limit, MAX_ROWS)))
    )
    if code:
        q = q.where(a.c.stock_code == code)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [
        {
            "code": r.stock_code,
            "kind": r.kind,
            "direction": r.direction,
            "change_percent": r.change_percent,
            "price": r.price,
            "reference_price": r.reference_price,
            "window_s": r.window_s,
            "triggered_at": _iso(r.triggered_at),
            "message": r.message,
        }
        for r in rows
    ]


def executions_since(engine: Engine, since: datetime, page: int = 5000) -> list[Execution]:
    """Stored execution notices from `since` on, oldest first, as events: the account book's
    state after a restart (the day's orders and the positions they made). Read in pages
    (keyset on event_time, id), all of them."""
    e = schema.executions
    out: list[Execution] = []
    after: tuple[Any, int] | None = None
    with engine.connect() as conn:
        while True:
            q = sa.select(e).where(e.c.event_time >= _bound(since))
            if after is not None:
                q = q.where(
                    sa.or_(
                        e.c.event_time > after[0],
                        sa.and_(e.c.event_time == after[0], e.c.id > after[1]),
                    )
                )
            rows = conn.execute(q.order_by(e.c.event_time, e.c.id).limit(page)).all()
            out += [
                Execution(
                    r.source,
                    r.customer_id,
                    r.account,
                    r.order_no,
                    r.original_order_no,
                    r.side,
                    r.kind,
                    r.correction,
                    bool(r.rejected),
                    r.stock_code,
                    r.quantity,
                    r.price,
                    r.order_qty,
                    r.order_price,
                    _utc(r.event_time).astimezone(KST),
                    r.name,
                    int(_utc(r.received_at).timestamp() * 1e9),
                    r.seq,
                )
                for r in rows
            ]
            if len(rows) < page:
                return out
            after = (rows[-1].event_time, rows[-1].id)
