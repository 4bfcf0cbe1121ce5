"""The Batch API's metrics on the router's registry: ``harmony_batches_total{status}``, batches this router ended
(``completed``, ``failed``, ``expired``, ``cancelled``; each at 0 from the start), and ``harmony_batches_overdue``,
batches still open (validating, in progress, cancelling, finalizing) past their completion window, read from the
database at scrape time (every router reads the same rows: a query takes the ``max``). A batch past its window is
ended ``expired`` by the next runner tick; one that stays open means no runner finalizes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, select

from services.batches.wire import TERMINAL
from services.store.db import Database
from services.store.query_gauge import QueryGauge
from services.store.schema import batches


def overdue_batches(db: Database, now: float) -> int:
    query = select(func.count()).select_from(batches).where(
        batches.c.status.not_in(sorted(TERMINAL)), batches.c.expires_at.is_not(None), batches.c.expires_at <= now)
    with db.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry, database: Callable[[], Database | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.ended = Counter("harmony_batches_total", "Batches this router ended, by terminal status", ["status"],
                             registry=registry)
        for status in sorted(TERMINAL):
            self.ended.labels(status)
        registry.register(QueryGauge("harmony_batches_overdue", "Batches still open past their completion window "
                                     "(none finalizes them)", [],
                                     lambda db, now: [((), overdue_batches(db, now))], database, clock))

    def batch_ended(self, status: str) -> None:
        if status in TERMINAL:
            self.ended.labels(status).inc()
