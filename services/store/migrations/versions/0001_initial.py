"""API keys, rate-limit windows, daily usage, the audit log, voice ownership.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False, server_default=""),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("models", sa.JSON, nullable=False),
        sa.Column("routes", sa.JSON, nullable=False),
        sa.Column("rpm", sa.Integer, nullable=True),
        sa.Column("audio_seconds_per_day", sa.Float, nullable=True),
        sa.Column("audio_seconds_per_month", sa.Float, nullable=True),
        sa.Column("admin", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "rate_windows",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("window", sa.BigInteger, primary_key=True),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "usage_daily",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("audio_seconds_in", sa.Float, nullable=False),
        sa.Column("audio_seconds_out", sa.Float, nullable=False),
        sa.Column("characters", sa.BigInteger, nullable=False),
    )
    _audit_and_voices()


def _audit_and_voices() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("model", sa.String(128), nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("audio_seconds_in", sa.Float, nullable=True),
        sa.Column("audio_seconds_out", sa.Float, nullable=True),
        sa.Column("characters", sa.Integer, nullable=True),
        sa.Column("queue_ms", sa.Float, nullable=True),
        sa.Column("compute_ms", sa.Float, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("client", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_log_key_time", "audit_log", ["key_id", "time"])
    op.create_table(
        "voice_owners",
        sa.Column("voice_id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_voice_owners_key_id", "voice_owners", ["key_id"])


def downgrade() -> None:
    for index, table in (("ix_voice_owners_key_id", "voice_owners"), ("ix_audit_log_key_time", "audit_log")):
        op.drop_index(index, table_name=table)
    for table in ("voice_owners", "audit_log", "usage_daily", "rate_windows", "api_keys"):
        op.drop_table(table)
