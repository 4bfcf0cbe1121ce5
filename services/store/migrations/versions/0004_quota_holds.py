"""Quota holds (audio reserved by requests in flight, open realtime sessions) and realtime turns in usage and audit.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quota_holds",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_quota_holds_key", "quota_holds", ["key_id", "expires_at"])
    with op.batch_alter_table("usage_daily") as table:
        table.add_column(sa.Column("turns", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("audit_log") as table:
        table.add_column(sa.Column("turns", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as table:
        table.drop_column("turns")
    with op.batch_alter_table("usage_daily") as table:
        table.drop_column("turns")
    op.drop_index("ix_quota_holds_key", table_name="quota_holds")
    op.drop_table("quota_holds")
