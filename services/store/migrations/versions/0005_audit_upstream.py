"""The router's time waiting on model services in the audit line (``upstream_ms``, as in its Server-Timing).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as table:
        table.add_column(sa.Column("upstream_ms", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as table:
        table.drop_column("upstream_ms")
