"""The store on SQLite and on a real PostgreSQL: migrations, keys, limits, usage, voice ownership."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from services.auth.keys import KEY_PREFIX, KeyStore, hash_key
from services.auth.limits import Limits, VoiceOwners
from services.store import open_database
from services.store.schema import metadata


class Clock:
    def __init__(self, when: str = "2026-03-31T23:59:00") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(database_url):
    database = open_database(url=database_url)
    yield database
    database.dispose()


def test_migrations_create_exactly_the_schema_and_run_twice(db):
    assert {"api_keys", "rate_windows", "usage_daily", "audit_log", "voice_owners", "voices",
            "voice_imports", "files", "batches", "batch_items", "quota_holds"} <= db.tables()
    assert db.current_revision() == "0006"
    db.upgrade()  # idempotent: a second replica starting finds nothing to do
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_upgrading_a_0001_database_keeps_its_rows(database_url):
    """A database made by an older release gains the voice tables; its keys stay."""
    old = open_database(url=database_url, upgrade=False)
    try:
        old.upgrade("0001")
        assert old.current_revision() == "0001" and "voices" not in old.tables()
        key, secret = KeyStore(old).create("before")
        old.upgrade()
        assert old.current_revision() == "0006" and "voices" in old.tables()
        assert KeyStore(old).verify(secret) == key
    finally:
        old.dispose()


def test_keys_are_random_shown_once_and_stored_hashed(db):
    store = KeyStore(db)
    key, secret = store.create("ci", owner="team-a", models=["whisper-1"], rpm=10, admin=False)
    other, other_secret = store.create("ci2")
    assert secret.startswith(KEY_PREFIX) and len(secret) >= 40 and secret != other_secret
    with db.engine.connect() as conn:
        dumped = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM api_keys") for v in row)
    assert secret not in dumped and hash_key(secret) in dumped
    assert store.verify(secret) == key
    assert store.verify(secret + "x") is None and store.verify("sk-" + secret[3:]) is None
    assert key.public(0)["prefix"] == secret[:8] + "..." and "key_hash" not in key.public(0)
    assert [k.id for k in store.list()] == [key.id, other.id]


def test_revocation_and_expiry(db):
    clock = Clock()
    store = KeyStore(db, clock)
    key, secret = store.create("short", expires_at=clock.now + 60)
    assert store.verify(secret).state(clock.now) == "active"
    assert store.verify(secret).state(clock.now + 61) == "expired"
    revoked = store.revoke(key.id)
    assert revoked.state(clock.now) == "revoked" and store.revoke(key.id).revoked_at == revoked.revoked_at
    assert store.revoke("key_missing") is None
    assert [k.id for k in store.list(include_revoked=False)] == []


def test_rate_windows_count_per_minute_and_reset(db):
    clock = Clock("2026-03-31T12:00:10")
    limits = Limits(db, clock)
    states = [limits.hit("key_a", 3) for _ in range(4)]
    assert [s.allowed for s in states] == [True, True, True, False]
    assert [s.remaining for s in states] == [2, 1, 0, 0]
    assert states[0].headers()["x-ratelimit-reset-requests"] == "50s"
    assert limits.hit("key_b", 3).allowed  # keys do not share windows
    clock.now += 60
    assert limits.hit("key_a", 3).remaining == 2


def test_rate_limit_is_atomic_across_connections(db):
    """Eight threads (as eight routers would) take a limit of 20 out of 40 attempts: exactly 20 pass."""
    limits = Limits(db, Clock("2026-03-31T12:00:10"))
    allowed = []

    def worker():
        for _ in range(5):
            allowed.append(limits.hit("key_a", 20).allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 20 and len(allowed) == 40


def test_audio_quota_per_day_and_month(db):
    clock = Clock("2026-03-30T10:00:00")
    limits = Limits(db, clock)
    limits.record("key_a", audio_in=30.0, characters=0)
    clock.now += 86_400  # 2026-03-31
    limits.record("key_a", audio_out=20.0, characters=120)
    limits.record("key_a", error=True)
    assert limits.audio_seconds("key_a") == (20.0, 50.0)
    assert limits.quota_exceeded("key_a", per_day=25, per_month=100) is None
    day = limits.quota_exceeded("key_a", per_day=20, per_month=None)
    assert day.period == "day" and day.retry_after_s == 14 * 3600
    month = limits.quota_exceeded("key_a", per_day=None, per_month=50)
    assert month.period == "month" and month.retry_after_s == 14 * 3600  # April starts at midnight too
    clock.now += 86_400  # April: a new month and day
    assert limits.quota_exceeded("key_a", per_day=20, per_month=50) is None
    rows = limits.usage("key_a")
    assert [(r["day"], r["requests"], r["errors"], r["characters"]) for r in rows] == [
        ("2026-03-30", 1, 0, 0), ("2026-03-31", 2, 1, 120)]
    assert limits.usage("key_a", since="2026-03-31") == rows[1:]


def test_voice_owners(db):
    owners = VoiceOwners(db)
    owners.set("voice_1", "key_a")
    owners.set("voice_2", "key_b")
    assert owners.owner("voice_1") == "key_a" and owners.owner("voice_9") is None
    assert owners.of("key_a") == {"voice_1"}
    owners.forget("voice_1")
    assert owners.owner("voice_1") is None
