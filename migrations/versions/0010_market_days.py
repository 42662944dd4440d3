"""market_days: the broker's market calendar (chk-holiday: open or not per date), cached so
that a restart does not ask again the same day

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "market_days",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("is_open", sa.Boolean, nullable=False),
        sa.Column("fetched_on", sa.Date, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("market_days")
