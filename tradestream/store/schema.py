"""SQLAlchemy Core tables. The migrations in ../migrations create them; this is the code's view.

Every table has a unique constraint on its event's natural key; inserts ignore conflicts, so a
re-sent or replayed event is stored once.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

metadata = sa.MetaData()

# BigInteger is not a rowid alias on SQLite (STACK-NOTES §4): use INTEGER there.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# MySQL/MariaDB DATETIME drops fractions unless asked: keep microseconds everywhere.
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _id() -> sa.Column[int]:
    return sa.Column("id", BigId, primary_key=True, autoincrement=True)


def _common() -> list[sa.Column[object]]:
    return [
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
    ]


stock_prices_realtime = sa.Table(
    "stock_prices_realtime",
    metadata,
    _id(),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("venue", sa.String(8), nullable=False),
    sa.Column("trade_time", Timestamp, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("change", sa.BigInteger, nullable=False),
    sa.Column("change_percent", sa.Float, nullable=False),
    sa.Column("open", sa.BigInteger, nullable=False),
    sa.Column("high", sa.BigInteger, nullable=False),
    sa.Column("low", sa.BigInteger, nullable=False),
    sa.Column("trade_volume", sa.BigInteger, nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),  # accumulated for the day
    *_common(),
    sa.UniqueConstraint("venue", "stock_code", "trade_time", "volume", name="uq_spr_natural"),
    sa.Index("ix_spr_code_time", "stock_code", "trade_time"),
)

orderbook_snapshots = sa.Table(
    "orderbook_snapshots",
    metadata,
    _id(),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("venue", sa.String(8), nullable=False),
    sa.Column("quote_time", Timestamp, nullable=False),
    sa.Column("ask1", sa.BigInteger, nullable=False),
    sa.Column("bid1", sa.BigInteger, nullable=False),
    sa.Column("ask_prices", sa.JSON, nullable=False),
    sa.Column("bid_prices", sa.JSON, nullable=False),
    sa.Column("ask_sizes", sa.JSON, nullable=False),
    sa.Column("bid_sizes", sa.JSON, nullable=False),
    sa.Column("total_ask_size", sa.BigInteger, nullable=False),
    sa.Column("total_bid_size", sa.BigInteger, nullable=False),
    sa.Column("expected_price", sa.BigInteger, nullable=False),
    sa.Column("expected_volume", sa.BigInteger, nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),
    *_common(),
    sa.UniqueConstraint(
        "venue",
        "stock_code",
        "quote_time",
        "volume",
        "total_ask_size",
        "total_bid_size",
        "ask1",
        "bid1",
        name="uq_obs_natural",
    ),
    sa.Index("ix_obs_code_time", "stock_code", "quote_time"),
)

program_trades = sa.Table(
    "program_trades",
    metadata,
    _id(),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("venue", sa.String(8), nullable=False),
    sa.Column("trade_time", Timestamp, nullable=False),
    *(
        sa.Column(n, sa.BigInteger, nullable=False)
        for n in (
            "sell_qty",
            "sell_value",
            "buy_qty",
            "buy_value",
            "net_qty",
            "net_value",
            "sell_rest",
            "buy_rest",
            "net_rest",
        )
    ),
    *_common(),
    sa.UniqueConstraint(
        "venue", "stock_code", "trade_time", "sell_qty", "buy_qty", name="uq_pgm_natural"
    ),
    sa.Index("ix_pgm_code_time", "stock_code", "trade_time"),
)

executions = sa.Table(
    "executions",
    metadata,
    _id(),
    sa.Column("account", sa.String(32), nullable=False),
    sa.Column("customer_id", sa.String(32), nullable=False),
    sa.Column("order_no", sa.String(32), nullable=False),
    sa.Column("original_order_no", sa.String(32), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("correction", sa.String(8), nullable=False),
    sa.Column("rejected", sa.Boolean, nullable=False),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("quantity", sa.BigInteger, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("order_qty", sa.BigInteger, nullable=False),
    sa.Column("order_price", sa.BigInteger, nullable=False),
    sa.Column("event_time", Timestamp, nullable=False),
    sa.Column("name", sa.String(80), nullable=False),
    # the notice's occurrence number in its session (Execution.seq): identical partial fills
    sa.Column("seq", sa.Integer, nullable=False, server_default="1"),
    *_common(),
    sa.UniqueConstraint(
        "account",
        "order_no",
        "kind",
        "event_time",
        "quantity",
        "price",
        "seq",
        name="uq_exe_natural",
    ),  # fmt: skip
    sa.Index("ix_exe_account_time", "account", "event_time"),
)

news = sa.Table(
    "news",
    metadata,
    _id(),
    sa.Column("realkey", sa.String(48), nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("tickers", sa.JSON, nullable=False),
    sa.Column("ticker", sa.String(12), nullable=True),
    sa.Column("media_id", sa.String(8), nullable=False),
    sa.Column("media", sa.String(64), nullable=False),
    sa.Column("published_at", Timestamp, nullable=False),
    sa.Column("body_size", sa.BigInteger, nullable=False),
    *_common(),
    sa.UniqueConstraint("realkey", name="uq_news_realkey"),
    sa.Index("ix_news_published", "published_at"),
    sa.Index("ix_news_ticker_published", "ticker", "published_at"),
)

feed_gaps = sa.Table(
    "feed_gaps",
    metadata,
    _id(),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=False),
    sa.Column("reason", sa.String(300), nullable=False),
    sa.UniqueConstraint("source", "started_at", name="uq_gap_natural"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    _id(),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("direction", sa.String(8), nullable=False),
    sa.Column("change_percent", sa.Float, nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("reference_price", sa.BigInteger, nullable=False),
    sa.Column("window_s", sa.Float, nullable=False),
    sa.Column("triggered_at", Timestamp, nullable=False),
    sa.Column("message", sa.String(300), nullable=False),
    *_common(),
    sa.UniqueConstraint("stock_code", "kind", "direction", "triggered_at", name="uq_alert_natural"),
    sa.Index("ix_alert_code_time", "stock_code", "triggered_at"),
    sa.Index("ix_alert_time", "triggered_at"),
)

signals = sa.Table(
    "signals",
    metadata,
    _id(),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("strategy", sa.String(64), nullable=False),
    sa.Column("stock_code", sa.String(12), nullable=False),  # "" for market-wide signals
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.UniqueConstraint("kind", "strategy", "stock_code", "created_at", name="uq_signal_natural"),
    sa.Index("ix_signal_kind_time", "kind", "created_at"),
)


index_ticks = sa.Table(
    "index_ticks",
    metadata,
    _id(),
    sa.Column("index_code", sa.String(8), nullable=False),
    sa.Column("index_name", sa.String(16), nullable=False),
    sa.Column("event_time", Timestamp, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("change", sa.Float, nullable=False),
    sa.Column("change_percent", sa.Float, nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),
    sa.Column("traded_value", sa.BigInteger, nullable=False),
    sa.Column("advancers", sa.Integer, nullable=False),
    sa.Column("decliners", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    *_common(),
    sa.UniqueConstraint("index_code", "event_time", "volume", name="uq_index_natural"),
    sa.Index("ix_index_code_time", "index_code", "event_time"),
)

slot_audit = sa.Table(
    "slot_audit",
    metadata,
    _id(),
    sa.Column("at", Timestamp, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("session", sa.String(32), nullable=False),
    sa.Column("tr_id", sa.String(16), nullable=False),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.UniqueConstraint("at", "action", "tr_id", "stock_code", name="uq_slot_audit_natural"),
    sa.Index("ix_slot_audit_at", "at"),
)

stocks = sa.Table(
    "stocks",
    metadata,
    sa.Column("code", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("market", sa.String(8), nullable=False),  # KOSPI, KOSDAQ, "" (unknown)
    sa.Column("source", sa.String(16), nullable=False),  # master, balance, ranking, ...
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.Index("ix_stocks_name", "name"),
)

backfill_bars = sa.Table(
    "backfill_bars",
    metadata,
    _id(),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("minute", Timestamp, nullable=False),  # the minute's start
    sa.Column("open", sa.BigInteger, nullable=False),
    sa.Column("high", sa.BigInteger, nullable=False),
    sa.Column("low", sa.BigInteger, nullable=False),
    sa.Column("close", sa.BigInteger, nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),
    *_common(),
    sa.UniqueConstraint("stock_code", "minute", name="uq_backfill_bar_natural"),
)

backfills = sa.Table(
    "backfills",
    metadata,
    _id(),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("ended_at", Timestamp, nullable=False),
    sa.Column("codes", sa.Integer, nullable=False),
    sa.Column("bars", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("detail", sa.String(300), nullable=False),
    sa.UniqueConstraint("source", "started_at", name="uq_backfill_natural"),
)

daily_bars = sa.Table(
    "daily_bars",
    metadata,
    _id(),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("open", sa.BigInteger, nullable=False),
    sa.Column("high", sa.BigInteger, nullable=False),
    sa.Column("low", sa.BigInteger, nullable=False),
    sa.Column("close", sa.BigInteger, nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),
    sa.UniqueConstraint("stock_code", "day", name="uq_daily_bar_natural"),
)

# The fencing token of each ingest lease: every batch the ingest writes checks, in its own
# transaction, that its token is still the current one (store/fence.py).
ingest_leases = sa.Table(
    "ingest_leases",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
)

# The broker's market calendar (kis-rest.md §9, chk-holiday), cached: asked at most once a day.
market_days = sa.Table(
    "market_days",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("is_open", sa.Boolean, nullable=False),
    sa.Column("fetched_on", sa.Date, nullable=False),
)
