"""SQLAlchemy Core tables. The migrations in ../migrations create them; this is the code's view."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# BigInteger is not a rowid alias on SQLite (STACK-NOTES §4): use INTEGER there.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

stock_prices_realtime = sa.Table(
    "stock_prices_realtime",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("stock_code", sa.String(12), nullable=False),
    sa.Column("venue", sa.String(8), nullable=False),
    sa.Column("trade_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("price", sa.BigInteger, nullable=False),
    sa.Column("change", sa.BigInteger, nullable=False),
    sa.Column("change_percent", sa.Float, nullable=False),
    sa.Column("open", sa.BigInteger, nullable=False),
    sa.Column("high", sa.BigInteger, nullable=False),
    sa.Column("low", sa.BigInteger, nullable=False),
    sa.Column("trade_volume", sa.BigInteger, nullable=False),
    sa.Column("volume", sa.BigInteger, nullable=False),  # accumulated for the day
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    # The natural key: re-sent trades (resubscribe, replay) are ignored on insert.
    sa.UniqueConstraint("venue", "stock_code", "trade_time", "volume", name="uq_spr_natural"),
    sa.Index("ix_spr_code_time", "stock_code", "trade_time"),
)
