"""The request's trace id in the audit line (``trace_id``, 32 hex digits, when tracing is on: docs/operations.md
"Traces").

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as table:
        table.add_column(sa.Column("trace_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as table:
        table.drop_column("trace_id")
