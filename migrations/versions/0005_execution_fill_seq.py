"""executions: a notice's occurrence number in its session is part of its natural key, so two
identical partial fills in one second are both kept

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_KEY = ["account", "order_no", "kind", "event_time", "quantity", "price"]


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=False, server_default="1"))
        batch.drop_constraint("uq_exe_natural", type_="unique")
        batch.create_unique_constraint("uq_exe_natural", [*OLD_KEY, "seq"])


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_constraint("uq_exe_natural", type_="unique")
        batch.create_unique_constraint("uq_exe_natural", OLD_KEY)
        batch.drop_column("seq")
