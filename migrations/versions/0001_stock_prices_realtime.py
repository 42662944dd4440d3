"""stock_prices_realtime: one row per trade, unique on its natural key

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "stock_prices_realtime",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
        sa.Column("volume", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.UniqueConstraint("venue", "stock_code", "trade_time", "volume", name="uq_spr_natural"),
    )
    op.create_index("ix_spr_code_time", "stock_prices_realtime", ["stock_code", "trade_time"])


def downgrade() -> None:
    op.drop_index("ix_spr_code_time", table_name="stock_prices_realtime")
    op.drop_table("stock_prices_realtime")
