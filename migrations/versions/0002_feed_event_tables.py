"""order books, program trades, executions, news, feed gaps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _meta() -> list[sa.Column]:
    return [
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "orderbook_snapshots",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
        *_meta(),
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
    )
    op.create_index("ix_obs_code_time", "orderbook_snapshots", ["stock_code", "quote_time"])

    op.create_table(
        "program_trades",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
        *_meta(),
        sa.UniqueConstraint(
            "venue", "stock_code", "trade_time", "sell_qty", "buy_qty", name="uq_pgm_natural"
        ),
    )
    op.create_index("ix_pgm_code_time", "program_trades", ["stock_code", "trade_time"])

    op.create_table(
        "executions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
        *_meta(),
        sa.UniqueConstraint(
            "account", "order_no", "kind", "event_time", "quantity", "price", name="uq_exe_natural"
        ),
    )
    op.create_index("ix_exe_account_time", "executions", ["account", "event_time"])

    op.create_table(
        "news",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("realkey", sa.String(48), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("tickers", sa.JSON, nullable=False),
        sa.Column("ticker", sa.String(12), nullable=True),
        sa.Column("media_id", sa.String(8), nullable=False),
        sa.Column("media", sa.String(64), nullable=False),
        sa.Column("published_at", Timestamp, nullable=False),
        sa.Column("body_size", sa.BigInteger, nullable=False),
        *_meta(),
        sa.UniqueConstraint("realkey", name="uq_news_realkey"),
    )
    op.create_index("ix_news_published", "news", ["published_at"])
    op.create_index("ix_news_ticker_published", "news", ["ticker", "published_at"])

    op.create_table(
        "feed_gaps",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp, nullable=False),
        sa.Column("reason", sa.String(300), nullable=False),
        sa.UniqueConstraint("source", "started_at", name="uq_gap_natural"),
    )


def downgrade() -> None:
    for table in ("feed_gaps", "news", "executions", "program_trades", "orderbook_snapshots"):
        op.drop_table(table)
