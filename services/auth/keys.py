"""API keys: random secrets shown once, stored as SHA-256 hashes, looked up by hash.

Why SHA-256 and not bcrypt/argon2: a key is 32 random bytes (256 bits), so no dictionary or
brute-force attack on a leaked hash is feasible; slow hashes exist to protect low-entropy
passwords. A fast hash lets every request be verified against the database (so a revocation
takes effect at once) without burning CPU. The lookup is by the hash (a unique index): the
time it takes depends only on the hash of what the client sent, never on how much of a real
key it matched, and the stored hash is compared again with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from services.store.db import Database
from services.store.schema import api_keys

KEY_PREFIX = "hk-"
KEY_BYTES = 32


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    owner: str
    prefix: str
    models: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    rpm: int | None = None
    audio_seconds_per_day: float | None = None
    audio_seconds_per_month: float | None = None
    admin: bool = False
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None

    @property
    def metered(self) -> bool:
        """Whether the key has an audio quota (its work is held and settled against it)."""
        return self.audio_seconds_per_day is not None or self.audio_seconds_per_month is not None

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def public(self, now: float) -> dict[str, Any]:
        """What the admin API and ``harmony keys`` show: never the secret, never its hash."""
        data = asdict(self)
        data.update(object="api_key", state=self.state(now), created_at=iso(self.created_at),
                    expires_at=iso(self.expires_at), revoked_at=iso(self.revoked_at), prefix=self.prefix + "...")
        return data


def _row_to_key(row: Any) -> ApiKey:
    data = dict(row._mapping)
    data.pop("key_hash", None)
    data["models"] = list(data.get("models") or [])
    data["routes"] = list(data.get("routes") or [])
    data["admin"] = bool(data["admin"])
    return ApiKey(**data)


class KeyStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def create(self, name: str, owner: str = "", models: list[str] | None = None, routes: list[str] | None = None,
               rpm: int | None = None, audio_seconds_per_day: float | None = None,
               audio_seconds_per_month: float | None = None, expires_at: float | None = None,
               admin: bool = False) -> tuple[ApiKey, str]:
        """A new key and its secret; the secret exists only in the return value."""
        if not name.strip() or len(name) > 128 or len(owner) > 128:
            raise ValueError("a key needs a name of 1 to 128 characters (owner: up to 128)")
        for number in (rpm, audio_seconds_per_day, audio_seconds_per_month):
            if number is not None and number < 0:
                raise ValueError("limits must not be negative")
        secret = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
        key = ApiKey(id="key_" + secrets.token_hex(8), name=name.strip(), owner=owner, prefix=secret[:8],
                     models=sorted(set(models or [])), routes=sorted(set(routes or [])), rpm=rpm,
                     audio_seconds_per_day=audio_seconds_per_day, audio_seconds_per_month=audio_seconds_per_month,
                     admin=admin, created_at=self.clock(), expires_at=expires_at)
        with self.db.engine.begin() as conn:
            conn.execute(insert(api_keys).values(**asdict(key), key_hash=hash_key(secret)))
        return key, secret

    def get(self, key_id: str) -> ApiKey | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        return _row_to_key(row) if row else None

    def list(self, include_revoked: bool = True) -> list[ApiKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.db.engine.connect() as conn:
            return [_row_to_key(row) for row in conn.execute(query)]

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key (idempotent: the first revocation time stays); None when there is no such key."""
        with self.db.engine.begin() as conn:
            conn.execute(update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                         .values(revoked_at=self.clock()))
        return self.get(key_id)

    def verify(self, secret: str) -> ApiKey | None:
        """The key whose secret this is (in any state: the caller tells revoked and expired apart), or None."""
        if not secret.startswith(KEY_PREFIX) or len(secret) > 256:
            return None
        digest = hash_key(secret)
        with self.db.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.key_hash == digest)).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return _row_to_key(row)
