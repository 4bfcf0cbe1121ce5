"""The gate in front of the router: who is calling (API key), whether they may, and what they used."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Callable

from services.auth.audit import AuditSink, DatabaseSink, NoSink, StreamSink, audio_out_seconds, audit_entry
from services.auth.guard import Forbidden, QuotaExhausted, RateLimited, RequestRecord, Unauthorized
from services.auth.keys import ApiKey, KeyStore
from services.auth.limits import Limits, VoiceOwners
from services.core.specs import HarmonyConfig
from services.store.db import Database, open_database

log = logging.getLogger("harmony.auth")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/"})  # "/": the playground page (services/playground)
OPEN_PREFIXES = ("/playground/",)  # the playground's files and figures; the API calls it makes need a key


def is_open(path: str) -> bool:
    """Paths served without an API key: probes, metrics, and the playground page (not the API it calls)."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class Gate:
    def __init__(self, db: Database | None, required: bool, sink: AuditSink,
                 clock: Callable[[], float] = time.time) -> None:
        if required and db is None:
            raise ValueError("auth needs a database")
        self.db = db
        self.required = required
        self.sink = sink
        self.keys = KeyStore(db, clock) if db else None
        self.limits = Limits(db, clock) if db else None
        self.owners = VoiceOwners(db, clock) if db else None
        self.clock = clock

    @classmethod
    def from_config(cls, config: HarmonyConfig) -> "Gate":
        """The database opens (and migrates) only when something needs it: auth, or audit to the database."""
        needs_db = config.auth.required or config.audit.sink == "database"
        db = open_database(config) if needs_db else None
        audit = config.audit
        sink: AuditSink = (StreamSink() if audit.sink == "stdout" else StreamSink(audit.path) if audit.sink == "file"
                           else DatabaseSink(db) if audit.sink == "database" and db else NoSink())
        if db is not None:
            log.info("store: %r", db)
        return cls(db, config.auth.required, sink)

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
                                  f"{rate.reset_s:.0f}s.", headers={**rate.headers(), "Retry-After": f"{rate.reset_s:.0f}"})
        exceeded = self.limits.quota_exceeded(key.id, key.audio_seconds_per_day, key.audio_seconds_per_month)
        if exceeded is not None:
            raise QuotaExhausted(f"You exceeded your audio quota of {exceeded.quota:g} seconds per {exceeded.period} "
                                 f"({exceeded.used:.1f} used).",
                                 headers={**record.extra_headers, "Retry-After": f"{exceeded.retry_after_s:.0f}"})

    @staticmethod
    def _check_route(key: ApiKey, path: str) -> None:
        if path.startswith("/admin") and not key.admin:
            raise Forbidden("the admin API needs an admin key", code="admin_required")
        if key.routes and not any(path == r or path.startswith(r.rstrip("/") + "/") for r in key.routes):
            raise Forbidden(f"this API key may not call {path}", code="route_not_allowed")

    def finish(self, record: RequestRecord) -> None:
        """Charge the key's usage and write the audit line (runs in a thread, after the response)."""
        if record.audio_seconds_out is None:
            record.audio_seconds_out = audio_out_seconds(record)
        duration_ms = (time.monotonic() - record.started_monotonic) * 1000
        try:
            if record.key is not None and self.limits is not None:
                self.limits.record(record.key.id, record.audio_seconds_in or 0.0, record.audio_seconds_out or 0.0,
                                   record.characters or 0, error=record.status >= 400)
            self.sink.write(audit_entry(record, duration_ms))
        except Exception:  # noqa: BLE001 - the response is gone; say so loudly rather than crash the server
            log.exception("could not record usage or audit for request %s", record.request_id)

    def close(self) -> None:
        if self.db is not None:
            self.db.dispose()

    async def afinish(self, record: RequestRecord) -> None:
        await asyncio.to_thread(self.finish, record)
