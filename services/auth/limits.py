"""Per-key limits that hold across router replicas: the counters live in the database.

Requests per minute: one row per key and Unix minute, incremented atomically by an UPSERT
(``INSERT ... ON CONFLICT DO UPDATE ... RETURNING count``), so two routers never both see
the last free slot. Refused requests count too (a client hammering past its limit stays
limited). Audio seconds: one row per key and UTC day, added to as each request (or realtime
turn) is settled; a month is the sum of its days. What a request may still use is decided by
``quota.py`` (settled usage plus the holds of the requests in flight).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from services.store.db import Database
from services.store.schema import rate_windows, usage_daily, voice_owners

WINDOW_S = 60


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_s: float
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit-requests": str(self.limit),
                "x-ratelimit-remaining-requests": str(self.remaining),
                "x-ratelimit-reset-requests": f"{self.reset_s:.0f}s"}


@dataclass(frozen=True)
class QuotaExceeded:
    period: str          # "day" or "month"
    used: float          # settled
    quota: float
    retry_after_s: float
    held: float = 0.0    # reserved by requests in flight (services/auth/quota.py)


def _insert(db: Database) -> Callable[[Table], postgresql.Insert | sqlite.Insert]:
    """The database's own INSERT, which has ON CONFLICT ... DO UPDATE (both dialects spell it alike)."""
    return postgresql.insert if db.dialect == "postgresql" else sqlite.insert


USAGE_COUNTERS = ("requests", "errors", "audio_seconds_in", "audio_seconds_out", "characters", "turns")


def usage_upsert(db: Database, key_id: str, day: str, **added: float) -> Any:
    """The statement that adds ``added`` (any of ``USAGE_COUNTERS``) to the key's row of ``day``, made if missing."""
    values = {name: (float if name.startswith("audio") else int)(added.get(name) or 0) for name in USAGE_COUNTERS}
    stmt = _insert(db)(usage_daily).values(key_id=key_id, day=day, **values)
    return stmt.on_conflict_do_update(index_elements=["key_id", "day"],
                                      set_={name: usage_daily.c[name] + stmt.excluded[name] for name in values})


def day_of(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def period_end(now: float, period: str) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return (start + timedelta(days=1)).timestamp()
    first = start.replace(day=1)
    return (first.replace(year=first.year + 1, month=1) if first.month == 12
            else first.replace(month=first.month + 1)).timestamp()


class Limits:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._last_prune = 0.0

    def hit(self, key_id: str, rpm: int) -> RateState:
        """Count one request in the key's current minute; allowed while the count is within ``rpm``."""
        now = self.clock()
        window = int(now // WINDOW_S)
        upsert = _insert(self.db)(rate_windows).values(key_id=key_id, window=window, count=1)
        stmt = upsert.on_conflict_do_update(index_elements=["key_id", "window"],
                                            set_={"count": rate_windows.c.count + 1}).returning(rate_windows.c.count)
        with self.db.engine.begin() as conn:
            count = conn.execute(stmt).scalar_one()
            if now - self._last_prune > WINDOW_S:
                self._last_prune = now
                conn.execute(delete(rate_windows).where(rate_windows.c.window < window - 1))
        reset = (window + 1) * WINDOW_S - now
        return RateState(limit=rpm, remaining=max(0, rpm - count), reset_s=max(1.0, reset), allowed=count <= rpm)

    def record(self, key_id: str, audio_in: float = 0.0, audio_out: float = 0.0, characters: int = 0,
               error: bool = False) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(usage_upsert(self.db, key_id, day_of(self.clock()), requests=1, errors=int(error),
                                      audio_seconds_in=audio_in, audio_seconds_out=audio_out, characters=characters))

    def audio_seconds(self, key_id: str) -> tuple[float, float]:
        """(today, this month) audio seconds, in and out together, UTC."""
        today = day_of(self.clock())
        total = usage_daily.c.audio_seconds_in + usage_daily.c.audio_seconds_out
        query = select(func.coalesce(func.sum(total), 0.0),
                       func.coalesce(func.sum(total).filter(usage_daily.c.day == today), 0.0)).where(
            usage_daily.c.key_id == key_id, usage_daily.c.day >= today[:7] + "-01", usage_daily.c.day <= today)
        with self.db.engine.connect() as conn:
            month, day = conn.execute(query).one()
        return float(day), float(month)

    def quota_exceeded(self, key_id: str, per_day: float | None, per_month: float | None) -> QuotaExceeded | None:
        if per_day is None and per_month is None:
            return None
        day, month = self.audio_seconds(key_id)
        now = self.clock()
        if per_month is not None and month >= per_month:
            return QuotaExceeded("month", month, per_month, period_end(now, "month") - now)
        if per_day is not None and day >= per_day:
            return QuotaExceeded("day", day, per_day, period_end(now, "day") - now)
        return None

    def usage(self, key_id: str | None = None, since: str | None = None, until: str | None = None) -> list[dict]:
        """Daily usage rows (key, day, requests, errors, audio seconds in/out, characters), oldest first."""
        query = select(usage_daily).order_by(usage_daily.c.key_id, usage_daily.c.day)
        if key_id:
            query = query.where(usage_daily.c.key_id == key_id)
        if since:
            query = query.where(usage_daily.c.day >= since)
        if until:
            query = query.where(usage_daily.c.day <= until)
        with self.db.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]


class VoiceOwners:
    """Which key registered each voice: another key can neither see, use nor delete it."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def set(self, voice_id: str, key_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(insert(voice_owners).values(voice_id=voice_id, key_id=key_id, created_at=self.clock()))

    def owner(self, voice_id: str) -> str | None:
        with self.db.engine.connect() as conn:
            return conn.execute(select(voice_owners.c.key_id).where(voice_owners.c.voice_id == voice_id)).scalar()

    def of(self, key_id: str) -> builtins.set[str]:  # builtins: the method set() shadows the type here
        with self.db.engine.connect() as conn:
            return set(conn.execute(select(voice_owners.c.voice_id).where(voice_owners.c.key_id == key_id)).scalars())

    def forget(self, voice_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(delete(voice_owners).where(voice_owners.c.voice_id == voice_id))


def usage_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-key totals of daily usage rows."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        totals = out.setdefault(row["key_id"], {"requests": 0, "errors": 0, "audio_seconds_in": 0.0,
                                                "audio_seconds_out": 0.0, "characters": 0, "turns": 0})
        for name in totals:
            totals[name] += row[name]
    return out
