"""Registered voices: their records (the reference speech lives in the object store).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voices",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("owner_key_id", sa.String(32), nullable=True),
        sa.Column("embedding", sa.JSON, nullable=False),
        sa.Column("embedding_model", sa.String(128), nullable=False),
        sa.Column("converter", sa.String(128), nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("speech_seconds", sa.Float, nullable=False),
        sa.Column("reference_files", sa.Integer, nullable=False),
        sa.Column("reference_sample_rate", sa.Integer, nullable=False),
        sa.Column("reference_key", sa.String(256), nullable=False),
    )
    op.create_index("ix_voices_owner_key_id", "voices", ["owner_key_id"])
    op.create_table(
        "voice_imports",
        sa.Column("source", sa.String(512), primary_key=True),
        sa.Column("imported_at", sa.Float, nullable=False),
        sa.Column("voices", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("voice_imports")
    op.drop_index("ix_voices_owner_key_id", table_name="voices")
    op.drop_table("voices")
