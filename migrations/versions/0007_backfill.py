"""backfill_bars and backfills: minute bars fetched from the broker for feed gaps, and what
each gap's backfill did

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "backfill_bars",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("stock_code", sa.String(12), nullable=False),
        sa.Column("minute", Timestamp, nullable=False),
        sa.Column("open", sa.BigInteger, nullable=False),
        sa.Column("high", sa.BigInteger, nullable=False),
        sa.Column("low", sa.BigInteger, nullable=False),
        sa.Column("close", sa.BigInteger, nullable=False),
        sa.Column("volume", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.UniqueConstraint("stock_code", "minute", name="uq_backfill_bar_natural"),
    )
    op.create_table(
        "backfills",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("ended_at", Timestamp, nullable=False),
        sa.Column("codes", sa.Integer, nullable=False),
        sa.Column("bars", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.String(300), nullable=False),
        sa.UniqueConstraint("source", "started_at", name="uq_backfill_natural"),
    )


def downgrade() -> None:
    op.drop_table("backfills")
    op.drop_table("backfill_bars")
