"""alerts and signals

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("stock_code", sa.String(12), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("change_percent", sa.Float, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("reference_price", sa.BigInteger, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("triggered_at", Timestamp, nullable=False),
        sa.Column("message", sa.String(300), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.UniqueConstraint("stock_code", "kind", "triggered_at", name="uq_alert_natural"),
    )
    op.create_index("ix_alert_code_time", "alerts", ["stock_code", "triggered_at"])
    op.create_index("ix_alert_time", "alerts", ["triggered_at"])
    op.create_table(
        "signals",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("stock_code", sa.String(12), nullable=False),  # "" for market-wide signals
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.UniqueConstraint(
            "kind", "strategy", "stock_code", "created_at", name="uq_signal_natural"
        ),
    )
    op.create_index("ix_signal_kind_time", "signals", ["kind", "created_at"])


def downgrade() -> None:
    op.drop_table("signals")
    op.drop_table("alerts")
