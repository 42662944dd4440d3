"""daily_bars: the broker's daily bars, cached for the daily VCP scan

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "daily_bars",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("stock_code", sa.String(12), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("open", sa.BigInteger, nullable=False),
        sa.Column("high", sa.BigInteger, nullable=False),
        sa.Column("low", sa.BigInteger, nullable=False),
        sa.Column("close", sa.BigInteger, nullable=False),
        sa.Column("volume", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("stock_code", "day", name="uq_daily_bar_natural"),
    )


def downgrade() -> None:
    op.drop_table("daily_bars")
