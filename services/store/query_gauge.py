"""A gauge read from the database when Prometheus scrapes (per-key quota usage, overdue batches): every router reads
the same rows, so a query over them takes the ``max``. A database not open yet, or one that does not answer, gives
no sample rather than a failed scrape (the failure is counted in ``harmony_store_errors_total``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.store.db import Database

log = logging.getLogger("harmony.store")

Rows = Callable[[Database, float], Sequence[tuple[Sequence[str], float]]]  # (label values, value) at a time


class QueryGauge(Collector):
    """The gauge ``name`` with one sample per row ``rows(db, now)`` gives; ``database`` is the database or a
    callable that returns it (None while it is not open)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], rows: Rows,
                 database: Database | Callable[[], Database | None], clock: Callable[[], float] = time.time) -> None:
        self.name, self.documentation, self.labels = name, documentation, list(labels)
        self.rows = rows
        self.database = database if callable(database) else (lambda: database)
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        db = self.database()
        if db is None:
            return
        try:
            found = self.rows(db, self.clock())
        except Exception:  # noqa: BLE001 - a scrape must not fail for the database
            log.warning("%s for metrics: the database did not answer", self.name, exc_info=True)
            return
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in found:
            family.add_metric(list(labels), value)
        yield family
