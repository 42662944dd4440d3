"""index ticks, slot audit; an alert's natural key includes its direction

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "index_ticks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
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
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.UniqueConstraint("index_code", "event_time", "volume", name="uq_index_natural"),
    )
    op.create_index("ix_index_code_time", "index_ticks", ["index_code", "event_time"])
    op.create_table(
        "slot_audit",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("session", sa.String(32), nullable=False),
        sa.Column("tr_id", sa.String(16), nullable=False),
        sa.Column("stock_code", sa.String(12), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
        sa.UniqueConstraint("at", "action", "tr_id", "stock_code", name="uq_slot_audit_natural"),
    )
    op.create_index("ix_slot_audit_at", "slot_audit", ["at"])
    # An up and a down alert of one code can fall in the same second.
    with op.batch_alter_table("alerts") as batch:
        batch.drop_constraint("uq_alert_natural", type_="unique")
        batch.create_unique_constraint(
            "uq_alert_natural", ["stock_code", "kind", "direction", "triggered_at"]
        )


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_constraint("uq_alert_natural", type_="unique")
        batch.create_unique_constraint("uq_alert_natural", ["stock_code", "kind", "triggered_at"])
    op.drop_table("slot_audit")
    op.drop_table("index_ticks")
