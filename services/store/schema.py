"""The tables, in SQLAlchemy Core. The migrations in ``migrations/versions`` create exactly these
(tests/unit/test_store.py compares them); change both together, with a new migration."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table

metadata = MetaData()

# Autoincrementing 64-bit ids: SQLite only autoincrements INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),            # public id, e.g. key_3f9a...
    Column("name", String(128), nullable=False),
    Column("owner", String(128), nullable=False, server_default=""),
    Column("prefix", String(16), nullable=False),          # first characters of the key, to recognise it
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256 hex of the whole key
    Column("models", JSON, nullable=False),                # allowed public model / SpeechRoute names; [] = all
    Column("routes", JSON, nullable=False),                # allowed API paths; [] = all
    Column("rpm", Integer, nullable=True),                 # requests per minute; null = unlimited
    Column("audio_seconds_per_day", Float, nullable=True),
    Column("audio_seconds_per_month", Float, nullable=True),
    Column("admin", Boolean, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),           # Unix seconds, UTC
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)

rate_windows = Table(
    "rate_windows", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("window", BigInteger, primary_key=True),        # Unix minute: floor(time / 60)
    Column("count", Integer, nullable=False),
)

usage_daily = Table(
    "usage_daily", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("day", String(10), primary_key=True),           # YYYY-MM-DD, UTC; a month is a prefix range
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),
    Column("audio_seconds_in", Float, nullable=False),
    Column("audio_seconds_out", Float, nullable=False),
    Column("characters", BigInteger, nullable=False),
    Column("turns", Integer, nullable=False, server_default="0"),  # realtime turns transcribed (each charged)
)

# What a key holds while work is in flight (services/auth/quota.py): ``audio`` holds reserve a request's (or a
# realtime turn's) estimated audio seconds against the key's quotas until it is settled or released;
# ``session`` holds count its open realtime sessions. A hold that is not renewed (its router died) expires.
quota_holds = Table(
    "quota_holds", metadata,
    Column("id", String(40), primary_key=True),            # hold_<hex>
    Column("key_id", String(32), nullable=False),
    Column("kind", String(16), nullable=False),            # audio | session
    Column("seconds", Float, nullable=False),              # audio seconds held (0 for a session)
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),           # renewed while its router lives
    Index("ix_quota_holds_key", "key_id", "expires_at"),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("method", String(8), nullable=False),
    Column("route", String(256), nullable=False),
    Column("model", String(128), nullable=True),
    Column("status", Integer, nullable=False),
    Column("audio_seconds_in", Float, nullable=True),
    Column("audio_seconds_out", Float, nullable=True),
    Column("characters", Integer, nullable=True),
    Column("queue_ms", Float, nullable=True),
    Column("compute_ms", Float, nullable=True),
    Column("upstream_ms", Float, nullable=True),           # the router's time waiting on model services
    Column("duration_ms", Float, nullable=False),
    Column("client", String(64), nullable=True),
    Column("turns", Integer, nullable=True),               # a realtime session's transcribed turns
    Column("trace_id", String(32), nullable=True),         # the request's trace, when tracing is on
    Index("ix_audit_log_key_time", "key_id", "time"),
)

voice_owners = Table(
    "voice_owners", metadata,
    Column("voice_id", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
)

# Registered voices (the voice service): the record here, the reference speech in the object store
# under ``reference_key``. Written object first, then row; deleted row first, then object.
voices = Table(
    "voices", metadata,
    Column("id", String(64), primary_key=True),            # voice_<16 hex>
    Column("name", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),      # Unix seconds, UTC
    Column("owner_key_id", String(32), nullable=True, index=True),  # the API key that registered it, if any
    Column("embedding", JSON, nullable=False),             # speaker embedding, a list of floats
    Column("embedding_model", String(128), nullable=False),
    Column("converter", String(128), nullable=False),      # the vc model whose statistics these are
    Column("stats", JSON, nullable=False),                 # the converter's speaker statistics
    Column("speech_seconds", Float, nullable=False),
    Column("reference_files", Integer, nullable=False),
    Column("reference_sample_rate", Integer, nullable=False),
    Column("reference_key", String(256), nullable=False),  # object-store key of the reference speech (FLAC)
)

# Directories of voices imported from the old layout (``options.voice_store``), so each is imported once.
voice_imports = Table(
    "voice_imports", metadata,
    Column("source", String(512), primary_key=True),
    Column("imported_at", Float, nullable=False),
    Column("voices", Integer, nullable=False),
)

# Files of the Files API (OpenAI's shape): the record here, the bytes in the object store under ``object_key``.
# Written object first, then row; deleted row first, then object (a crash between leaves an object the reclaimer
# finds by its missing row, never a row without its bytes).
files = Table(
    "files", metadata,
    Column("id", String(64), primary_key=True),            # file-<24 hex>
    Column("filename", String(512), nullable=False),
    Column("purpose", String(32), nullable=False),         # batch, user_data, batch_output
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),      # Unix seconds, UTC
    Column("expires_at", BigInteger, nullable=True),
    Column("owner_key_id", String(32), nullable=True),     # the API key that made it, if any
    Column("object_key", String(256), nullable=False),
    Index("ix_files_owner_created", "owner_key_id", "created_at"),
    Index("ix_files_expires_at", "expires_at"),
)

# Batches of the Batch API: one row each; its counters move in the same transaction as the item they count.
batches = Table(
    "batches", metadata,
    Column("id", String(64), primary_key=True),            # batch_<24 hex>
    Column("endpoint", String(64), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("owner_key_id", String(32), nullable=True),
    Column("metadata", JSON, nullable=True),
    Column("errors", JSON, nullable=True),                 # OpenAI's errors object of a failed validation
    Column("output_file_id", String(64), nullable=True),
    Column("error_file_id", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=True),
    Column("finalizing_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("failed_at", BigInteger, nullable=True),
    Column("expired_at", BigInteger, nullable=True),
    Column("cancelling_at", BigInteger, nullable=True),
    Column("cancelled_at", BigInteger, nullable=True),
    Column("total", Integer, nullable=False, server_default="0"),
    Column("completed", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("audio_seconds_total", Float, nullable=True),
    Column("audio_seconds_done", Float, nullable=False, server_default="0"),
    Column("version", Integer, nullable=False, server_default="0"),   # bumped by every change (progress events)
    Column("lease_owner", String(64), nullable=True),      # the router validating or finalizing it
    Column("lease_until", Float, nullable=True),
    Index("ix_batches_status", "status"),
    Index("ix_batches_owner_created", "owner_key_id", "created_at"),
)

# One row per request line of a batch; ``status`` pending -> running (leased) -> completed | failed. The output
# line is stored with the status that reports it, in one transaction: a request is reported once.
batch_items = Table(
    "batch_items", metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("line", Integer, primary_key=True),             # 1-based line of the input file
    Column("custom_id", String(512), nullable=False),
    Column("body", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_try_at", Float, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("audio_seconds", Float, nullable=True),         # the input audio's (transcriptions) or output's (speech)
    Column("result", JSON, nullable=True),                 # the output or error line
    Index("ix_batch_items_status", "batch_id", "status", "next_try_at"),
)
