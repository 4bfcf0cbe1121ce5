"""Each API key's audio usage against its quotas, read from the database when Prometheus scrapes the router:
``harmony_key_quota_used_ratio{key_id, key_name, period}`` (``period``: ``day`` or ``month``), settled audio seconds
(in and out, UTC, as ``limits.py`` counts them) over the key's quota. Only live keys with a quota are reported
(keys are few: the cardinality stays small); the key's public id and name, never its secret. Every router reads
the same rows, so a query takes the ``max`` across them. One grouped query per scrape over this month's usage rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import and_, func, or_, select

from services.auth.limits import day_of
from services.store.db import Database
from services.store.query_gauge import QueryGauge
from services.store.schema import api_keys, usage_daily


def quota_usage(db: Database, now: float) -> list[tuple[tuple[str, str, str], float]]:
    """((key id, key name, period), used / quota) of every live key with a day or month quota."""
    today = day_of(now)
    total = usage_daily.c.audio_seconds_in + usage_daily.c.audio_seconds_out
    used = (select(usage_daily.c.key_id, func.sum(total).label("month"),
                   func.sum(total).filter(usage_daily.c.day == today).label("day"))
            .where(usage_daily.c.day >= today[:7] + "-01", usage_daily.c.day <= today)
            .group_by(usage_daily.c.key_id).subquery())
    query = (select(api_keys.c.id, api_keys.c.name, api_keys.c.audio_seconds_per_day,
                    api_keys.c.audio_seconds_per_month, used.c.day, used.c.month)
             .outerjoin(used, used.c.key_id == api_keys.c.id)
             .where(api_keys.c.revoked_at.is_(None),
                    or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
                    or_(and_(api_keys.c.audio_seconds_per_day.is_not(None), api_keys.c.audio_seconds_per_day > 0),
                        and_(api_keys.c.audio_seconds_per_month.is_not(None),
                             api_keys.c.audio_seconds_per_month > 0))))
    out = []
    with db.engine.connect() as conn:
        for row in conn.execute(query):
            for period, quota, spent in (("day", row.audio_seconds_per_day, row.day),
                                         ("month", row.audio_seconds_per_month, row.month)):
                if quota is not None and quota > 0:
                    out.append(((row.id, row.name, period), float(spent or 0.0) / float(quota)))
    return out


def quota_usage_gauge(db: Database, clock: Callable[[], float] = time.time) -> QueryGauge:
    """The collector of ``harmony_key_quota_used_ratio`` for the router's registry."""
    return QueryGauge("harmony_key_quota_used_ratio", "An API key's settled audio seconds over its quota for the "
                      "period (day or month, UTC); 1 is spent", ["key_id", "key_name", "period"],
                      quota_usage, db, clock)
