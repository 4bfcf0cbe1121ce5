"""The Batch API's metrics on the router's registry: ``harmony_batches_total{status}``, batches this router ended
(``completed``, ``failed``, ``expired``, ``cancelled``; each at 0 from the start), and ``harmony_batches_overdue``,
batches still open (validating, in progress, cancelling, finalizing) past their completion window, read from the
database at scrape time (every router reads the same rows: a query takes the ``max``). A batch past its window is
ended ``expired`` by the next runner tick; one that stays open means no runner finalizes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from services.batches.wire import TERMINAL
from services.store.db import Database
from services.store.schema import batches

log = logging.getLogger("harmony.batches")


def overdue_batches(db: Database, now: float) -> int:
    query = select(func.count()).select_from(batches).where(
        batches.c.status.not_in(sorted(TERMINAL)), batches.c.expires_at.is_not(None), batches.c.expires_at <= now)
    with db.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


class _Overdue(Collector):
    def __init__(self, database: Callable[[], Database | None], clock: Callable[[], float]) -> None:
        self.database = database
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        db = self.database()
        if db is None:  # the runner has not opened the store yet: nothing known
            return
        try:
            count = overdue_batches(db, self.clock())
        except Exception:  # noqa: BLE001 - a scrape must not fail for the database (counted in harmony_store_errors)
            log.warning("overdue batches for metrics: the database did not answer", exc_info=True)
            return
        yield GaugeMetricFamily("harmony_batches_overdue", "Batches still open past their completion window "
                                "(none finalizes them)", value=count)


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry, database: Callable[[], Database | None],
                 clock: Callable[[], float] = time.time) -> None:
        self.ended = Counter("harmony_batches_total", "Batches this router ended, by terminal status", ["status"],
                             registry=registry)
        for status in sorted(TERMINAL):
            self.ended.labels(status)
        registry.register(_Overdue(database, clock))

    def batch_ended(self, status: str) -> None:
        if status in TERMINAL:
            self.ended.labels(status).inc()
