"""Audio quotas that hold under concurrency and across router replicas: the database decides.

Work that is charged by the audio second first *reserves* it: a hold (a ``quota_holds`` row of kind ``audio``)
of the request's estimated seconds, taken in one transaction that sees the key's settled usage (``usage_daily``)
and every hold still open, on any router. A hold is granted while the key has something left of its day and its
month: settled plus held below the quota. The request then runs, and is *settled* (its hold deleted and its real
figure added to the day's usage, one transaction) or *released* (deleted, nothing charged) when it fails or its
client leaves. So once a key's settled and held seconds reach its quota, nothing more is admitted, and what was
admitted before is in the sum: a quota is passed by at most the request that crossed it (when each hold covers
its request's charge; docs/auth.md has the exact terms).

Serialised per key: on PostgreSQL by a transaction-scoped advisory lock on the key, on SQLite by taking the
database's write lock first (the hold is inserted before the sums are read). Holds are renewed while their
router lives (``renew``, every ``RENEW_EVERY_S``); one whose router died stops counting after ``HOLD_TTL_S``.
Kind ``session`` holds count a key's open realtime sessions the same way.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, delete, func, insert, select, text, update

from services.auth.limits import QuotaExceeded, day_of, period_end, usage_upsert
from services.store.db import Database
from services.store.schema import quota_holds, usage_daily

HOLD_TTL_S = 90.0          # a hold its router stopped renewing counts this long at most
RENEW_EVERY_S = 30.0
MAX_HOLD_AGE_S = 2 * 3600.0  # never renewed past this (a session lasts an hour; a request far less): a hold lost
                             # by a bug cannot keep a key's quota held while its router lives
HELD_RETRY_S = 5.0         # Retry-After when in-flight holds, not settled usage, fill the quota
PRUNE_EVERY_S = 60.0


@dataclass(frozen=True)
class Hold:
    id: str
    key_id: str
    kind: str
    seconds: float


class _Refused(Exception):
    def __init__(self, exceeded: QuotaExceeded) -> None:
        self.exceeded = exceeded


def _lock_id(key_id: str) -> int:
    return int.from_bytes(hashlib.sha256(b"harmony-quota:" + key_id.encode()).digest()[:8], "big", signed=True)


class QuotaLedger:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time, ttl_s: float = HOLD_TTL_S) -> None:
        self.db = db
        self.clock = clock
        self.ttl_s = ttl_s
        self._open: dict[str, float] = {}   # this process's holds (and when taken), renewed while it lives
        self._mutex = threading.Lock()
        self._last_prune = 0.0

    # ------------------------------------------------------------------ holds

    def reserve(self, key_id: str, seconds: float, per_day: float | None, per_month: float | None
                ) -> Hold | QuotaExceeded:
        """A hold of ``seconds`` for the key, or why not (its quota is spent, counting the holds in flight)."""
        hold = Hold("hold_" + secrets.token_hex(12), key_id, "audio", max(float(seconds), 0.0))
        try:
            with self.db.engine.begin() as conn:
                self._take(conn, hold)
                now = self.clock()
                settled_day, settled_month = self._settled(conn, key_id, now)
                held = self._held(conn, key_id, "audio", now, but=hold.id)
                refused = _refusal(settled_day, settled_month, held, per_day, per_month, now)
                if refused is not None:
                    raise _Refused(refused)
        except _Refused as refusal:
            return refusal.exceeded
        self._remember(hold.id)
        return hold

    def open_session(self, key_id: str, limit: int) -> Hold | None:
        """A hold for one more open realtime session of the key, or None when it has ``limit`` open already."""
        hold = Hold("hold_" + secrets.token_hex(12), key_id, "session", 0.0)
        try:
            with self.db.engine.begin() as conn:
                self._take(conn, hold)
                count = conn.execute(select(func.count()).select_from(quota_holds).where(
                    self._live(key_id, "session", self.clock()), quota_holds.c.id != hold.id)).scalar_one()
                if count >= limit:
                    raise _Refused(QuotaExceeded("sessions", count, limit, 0.0))
        except _Refused:
            return None
        self._remember(hold.id)
        return hold

    def exceeded(self, key_id: str, per_day: float | None, per_month: float | None) -> QuotaExceeded | None:
        """Whether the key has nothing left now (settled plus held): new work is refused before its body is read."""
        if per_day is None and per_month is None:
            return None
        now = self.clock()
        with self.db.engine.connect() as conn:
            settled_day, settled_month = self._settled(conn, key_id, now)
            held = self._held(conn, key_id, "audio", now)
        return _refusal(settled_day, settled_month, held, per_day, per_month, now)

    def settle(self, key_id: str, holds: list[Hold], **usage: float) -> None:
        """Delete ``holds`` and add ``usage`` (``requests``, ``errors``, audio seconds, ``characters``, ``turns``) to
        the key's day, in one transaction: the figure moves from held to settled at once."""
        with self.db.engine.begin() as conn:
            self._drop(conn, holds)
            if any(usage.values()):
                conn.execute(usage_upsert(self.db, key_id, day_of(self.clock()), **usage))

    def release(self, holds: list[Hold]) -> None:
        if holds:
            with self.db.engine.begin() as conn:
                self._drop(conn, holds)

    def renew(self) -> int:
        """Extend this process's holds (it is alive); the number renewed. Expired holds of anyone are pruned."""
        now = self.clock()
        with self._mutex:
            for old in [i for i, taken in self._open.items() if now - taken > MAX_HOLD_AGE_S]:
                del self._open[old]
            ids = list(self._open)
        with self.db.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(update(quota_holds).where(quota_holds.c.id.in_(ids[start:start + 500]))
                             .values(expires_at=now + self.ttl_s))
            if now - self._last_prune >= PRUNE_EVERY_S:
                self._last_prune = now
                conn.execute(delete(quota_holds).where(quota_holds.c.expires_at < now))
        return len(ids)

    def open_holds(self) -> int:
        with self._mutex:
            return len(self._open)

    # ------------------------------------------------------------------ plumbing

    def _take(self, conn: Connection, hold: Hold) -> None:
        """Serialise the key's reservations, then insert the hold (SQLite: this write takes the lock)."""
        if self.db.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(hold.key_id)})
        now = self.clock()
        conn.execute(insert(quota_holds).values(id=hold.id, key_id=hold.key_id, kind=hold.kind, seconds=hold.seconds,
                                                created_at=now, expires_at=now + self.ttl_s))

    @staticmethod
    def _live(key_id: str, kind: str, now: float):
        return and_(quota_holds.c.key_id == key_id, quota_holds.c.kind == kind, quota_holds.c.expires_at > now)

    def _held(self, conn: Connection, key_id: str, kind: str, now: float, but: str | None = None) -> float:
        query = select(func.coalesce(func.sum(quota_holds.c.seconds), 0.0)).where(self._live(key_id, kind, now))
        if but is not None:
            query = query.where(quota_holds.c.id != but)
        return float(conn.execute(query).scalar_one())

    @staticmethod
    def _settled(conn: Connection, key_id: str, now: float) -> tuple[float, float]:
        today = day_of(now)
        total = usage_daily.c.audio_seconds_in + usage_daily.c.audio_seconds_out
        month, day = conn.execute(select(
            func.coalesce(func.sum(total), 0.0), func.coalesce(func.sum(total).filter(usage_daily.c.day == today), 0.0)
        ).where(usage_daily.c.key_id == key_id, usage_daily.c.day >= today[:7] + "-01",
                usage_daily.c.day <= today)).one()
        return float(day), float(month)

    def _drop(self, conn: Connection, holds: list[Hold]) -> None:
        ids = [h.id for h in holds]
        if ids:
            conn.execute(delete(quota_holds).where(quota_holds.c.id.in_(ids)))
        with self._mutex:
            for hold_id in ids:
                self._open.pop(hold_id, None)

    def _remember(self, hold_id: str) -> None:
        with self._mutex:
            self._open[hold_id] = self.clock()


def _refusal(settled_day: float, settled_month: float, held: float, per_day: float | None, per_month: float | None,
             now: float) -> QuotaExceeded | None:
    """A quota is spent when settled plus held reach it; Retry-After: the period's end when settled usage alone
    spends it, else a few seconds (requests in flight may yet be released)."""
    for period, settled, quota in (("month", settled_month, per_month), ("day", settled_day, per_day)):
        if quota is not None and settled + held >= quota:
            wait = period_end(now, period) - now if settled >= quota else HELD_RETRY_S
            return QuotaExceeded(period, settled, quota, wait, held)
    return None
