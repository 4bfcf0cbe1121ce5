"""The gate in front of the router: who is calling (API key), whether they may, and what they used."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from services.auth.audit import AuditSink, DatabaseSink, NoSink, StreamSink, audio_out_seconds, audit_entry
from services.auth.guard import Forbidden, QuotaExhausted, RateLimited, RequestRecord, Unauthorized
from services.auth.keys import ApiKey, KeyStore
from services.auth.limits import Limits, QuotaExceeded, VoiceOwners
from services.auth.quota import RENEW_EVERY_S, Hold, QuotaLedger
from services.core.contracts.specs import HarmonyConfig
from services.store.db import Database, open_database

log = logging.getLogger("harmony.auth")

# "/": the playground page (services/playground); "/metrics/services": harmony serve's model services, for Prometheus
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/metrics/services", "/"})
OPEN_PREFIXES = ("/playground/",)  # the playground's files and figures; the API calls it makes need a key


# New work: the requests a spent audio quota refuses. Everything else (listing, retrieving, downloading, deleting and
# cancelling what a key owns; uploading a file) stays open, so a key out of quota still reaches what it paid for.
NEW_WORK = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech", "/v1/audio/vad",
                      "/v1/audio/conversions", "/v1/audio/embeddings", "/v1/audio/voices", "/v1/batches",
                      "/v1/realtime"})


def is_open(path: str) -> bool:
    """Paths served without an API key: probes, metrics, and the playground page (not the API it calls)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def is_new_work(method: str, path: str) -> bool:
    """A request that starts work a quota pays for (a WebSocket's method is ``WS``)."""
    return method in ("POST", "WS") and path in NEW_WORK


class TooManySessions(RateLimited):
    default_code = "too_many_sessions"


class QuotaHeld(RateLimited):
    default_code = "quota_held"


REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class Gate:
    def __init__(self, db: Database | None, required: bool, sink: AuditSink,
                 clock: Callable[[], float] = time.time, sessions_per_key: int = 16) -> None:
        if required and db is None:
            raise ValueError("auth needs a database")
        self.db = db
        self.required = required
        self.sink = sink
        self.keys = KeyStore(db, clock) if db else None
        self.limits = Limits(db, clock) if db else None
        self.owners = VoiceOwners(db, clock) if db else None
        self.quota = QuotaLedger(db, clock) if db else None
        self.sessions_per_key = sessions_per_key
        self.clock = clock

    @classmethod
    def from_config(cls, config: HarmonyConfig) -> Gate:
        """The database opens (and migrates) only when something needs it: auth, or audit to the database."""
        needs_db = config.auth.required or config.audit.sink == "database"
        db = open_database(config) if needs_db else None
        audit = config.audit
        sink: AuditSink = (StreamSink() if audit.sink == "stdout" else StreamSink(audit.path) if audit.sink == "file"
                           else DatabaseSink(db) if audit.sink == "database" and db else NoSink())
        if db is not None:
            log.info("store: %r", db)
        return cls(db, config.auth.required, sink, sessions_per_key=config.auth.realtime_sessions_per_key)

    def admit(self, record: RequestRecord, secret: str | None) -> None:
        """Raise the error that refuses this request, or return with ``record.key`` set (runs in a thread)."""
        if not self.required or self.keys is None or self.limits is None:
            return
        if not secret:
            raise Unauthorized("You didn't provide an API key. Send it as 'Authorization: Bearer KEY' "
                               "(or the X-API-Key header).")
        self._admit(record, self.keys.verify(secret), per_minute=True)

    def admit_key(self, record: RequestRecord, key_id: str | None) -> None:
        """Admit a request the engine makes for the key ``key_id`` (a batch's request, run in-process): the key
        must still be active, and its routes, models and quotas hold; its per-minute rate does not (a batch's
        requests are paced by the runner, not the client)."""
        if not self.required or self.keys is None:
            return
        self._admit(record, self.keys.get(key_id) if key_id else None, per_minute=False)

    def _admit(self, record: RequestRecord, key: ApiKey | None, per_minute: bool) -> None:
        assert self.limits is not None
        state = key.state(self.clock()) if key else "unknown"
        if key is None or state != "active":
            reason = {"expired": "has expired", "revoked": "has been revoked"}.get(state, "is not valid")
            raise Unauthorized(f"Incorrect API key provided: the key {reason}.")
        record.key = key
        self._check_route(key, record.route)
        if key.rpm is not None and per_minute:
            rate = self.limits.hit(key.id, key.rpm)
            record.extra_headers.update(rate.headers())
            if not rate.allowed:
                raise RateLimited(f"Rate limit reached for requests: {key.rpm} per minute. Try again in "
                                  f"{rate.reset_s:.0f}s.",
                                  headers={**rate.headers(), "Retry-After": f"{rate.reset_s:.0f}"})
        if key.metered and is_new_work(record.method, record.route):
            assert self.quota is not None
            exceeded = self.quota.exceeded(key.id, key.audio_seconds_per_day, key.audio_seconds_per_month)
            if exceeded is not None:
                raise _quota_error(exceeded, record.extra_headers)

    def reserve(self, record: RequestRecord, estimate: Callable[[], float]) -> float | None:
        """Hold ``estimate()`` audio seconds of the request's key before its work is computed (runs in a thread);
        QuotaExhausted when its settled usage spent it, QuotaHeld when its requests in flight hold the rest (see
        ``_quota_error``). The seconds held, or None when the key has no audio quota (nothing to hold)."""
        key = record.key
        if key is None or not key.metered or self.quota is None:
            return None
        seconds = max(float(estimate()), 0.0)
        record.holds.append(self._hold(key, seconds, record.extra_headers))
        return seconds

    def _hold(self, key: ApiKey, seconds: float, headers: dict[str, str]) -> Hold:
        assert self.quota is not None
        held = self.quota.reserve(key.id, seconds, key.audio_seconds_per_day, key.audio_seconds_per_month)
        if isinstance(held, QuotaExceeded):
            raise _quota_error(held, headers)
        return held

    def reserve_turn(self, record: RequestRecord, seconds: float) -> Hold | None:
        """A realtime turn about to be transcribed: one more request in the key's minute (RateLimited past its
        rpm), and its seconds held like any request's (QuotaExhausted or QuotaHeld). None: nothing to hold."""
        key = record.key
        if key is None or self.limits is None:
            return None
        if key.rpm is not None:
            rate = self.limits.hit(key.id, key.rpm)
            if not rate.allowed:
                raise RateLimited(f"Rate limit reached for requests: {key.rpm} per minute (each realtime turn counts "
                                  f"as one). Try again in {rate.reset_s:.0f}s.")
        if not key.metered:
            return None
        hold = self._hold(key, seconds, {})
        record.holds.append(hold)  # released with the session if it ends first
        return hold

    def settle_turn(self, record: RequestRecord, hold: Hold | None, seconds: float) -> None:
        """A transcribed turn charged at once: its hold settled to its seconds, one more turn in the key's day."""
        if record.key is not None and self.quota is not None:
            self.quota.settle(record.key.id, _taken(record, hold), audio_seconds_in=seconds, turns=1)

    def release(self, record: RequestRecord, hold: Hold | None) -> None:
        if self.quota is not None:
            self.quota.release(_taken(record, hold))

    def open_session(self, record: RequestRecord) -> Hold | None:
        """One more open realtime session of the request's key: TooManySessions past ``sessions_per_key`` open on
        all routers. The hold goes with the session's other holds when it ends."""
        if record.key is None or self.quota is None:
            return None
        hold = self.quota.open_session(record.key.id, self.sessions_per_key)
        if hold is None:
            raise TooManySessions(f"this API key has {self.sessions_per_key} realtime sessions open, its limit "
                                  "(auth.realtime_sessions_per_key): close one and try again")
        record.holds.append(hold)
        return hold

    async def keep_holds(self) -> None:
        """Renew this router's holds while it lives (a background task of the router's lifespan)."""
        if self.quota is None:
            return
        while True:
            await asyncio.sleep(RENEW_EVERY_S)
            try:
                await asyncio.to_thread(self.quota.renew)
            except Exception:  # noqa: BLE001 - a database hiccup: the next round renews them
                log.exception("could not renew quota holds")

    @staticmethod
    def _check_route(key: ApiKey, path: str) -> None:
        if path.startswith("/admin") and not key.admin:
            raise Forbidden("the admin API needs an admin key", code="admin_required")
        if key.routes and not any(path == r or path.startswith(r.rstrip("/") + "/") for r in key.routes):
            raise Forbidden(f"this API key may not call {path}", code="route_not_allowed")

    def finish(self, record: RequestRecord) -> None:
        """Settle the request's holds to what it used (released when it failed), count it in the key's day and write
        the audit line (runs in a thread, after the response). Realtime turns were charged as they ended."""
        if record.audio_seconds_out is None:
            record.audio_seconds_out = audio_out_seconds(record)
        duration_ms = (time.monotonic() - record.started_monotonic) * 1000
        try:
            if record.key is not None and self.quota is not None:
                failed = record.status >= 400
                charged_in = 0.0 if failed else max((record.audio_seconds_in or 0.0) - record.settled_in, 0.0)
                charged_out = 0.0 if failed else record.audio_seconds_out or 0.0
                self.quota.settle(record.key.id, record.holds, requests=1, errors=int(failed),
                                  audio_seconds_in=charged_in, audio_seconds_out=charged_out,
                                  characters=record.characters or 0)
            self.sink.write(audit_entry(record, duration_ms))
        except Exception:  # noqa: BLE001 - the response is gone; say so loudly rather than crash the server
            log.exception("could not record usage or audit for request %s", record.request_id)

    def close(self) -> None:
        if self.db is not None:
            self.db.dispose()

    async def afinish(self, record: RequestRecord) -> None:
        """``finish`` in a worker thread, shielded: a request cancelled meanwhile (its client left, or the server is
        stopping) is still charged and audited; the loop's executor runs it before the process exits."""
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, self.finish, record))


def _taken(record: RequestRecord, hold: Hold | None) -> list[Hold]:
    """``hold`` taken off the request's holds (it is settled or released on its own)."""
    if hold is None:
        return []
    if hold in record.holds:
        record.holds.remove(hold)
    return [hold]


def _quota_error(exceeded: QuotaExceeded, headers: dict[str, str]) -> RateLimited | QuotaExhausted:
    """429 ``insufficient_quota`` when settled usage spends the quota (until the period ends); 429 ``quota_held``
    (a rate limit: try again in a few seconds) when the key's requests in flight hold what is left."""
    retry = {**headers, "Retry-After": f"{max(exceeded.retry_after_s, 1.0):.0f}"}
    if exceeded.used < exceeded.quota:
        return QuotaHeld(f"Your requests in flight hold the rest of your audio quota of {exceeded.quota:g} seconds "
                         f"per {exceeded.period} ({exceeded.used:.1f} used, {exceeded.held:.1f} held): try again "
                         "when they have ended.", headers=retry)
    return QuotaExhausted(f"You exceeded your audio quota of {exceeded.quota:g} seconds per {exceeded.period} "
                          f"({exceeded.used:.1f} used).", headers=retry)
