"""Failures of the stores, counted for Prometheus: ``harmony_store_errors_total{store, operation}``.

``store`` is ``database`` (every statement or connection SQLAlchemy saw fail, through the engine's ``handle_error``
event: ``operation`` is the statement's verb, ``select``, ``insert``, ``update``, ``delete``, or ``connect``,
``other``) or ``objects`` (an object store's ``put``, ``get``, ``open``, ``delete``, ``keys`` that raised; a missing
object is an answer, not a failure). The counts are the process's (a failing database fails for every app in it);
the router's registry reports them (``StoreErrorsCollector``), every pair at 0 from the start so that a first
failure is an increase Prometheus sees.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event

DATABASE_OPERATIONS = ("select", "insert", "update", "delete", "connect", "other")
OBJECT_OPERATIONS = ("put", "get", "open", "delete", "keys")
KNOWN = [("database", op) for op in DATABASE_OPERATIONS] + [("objects", op) for op in OBJECT_OPERATIONS]


class StoreErrors:
    """Thread-safe counts of failed store operations, by (store, operation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = dict.fromkeys(KNOWN, 0)

    def note(self, store: str, operation: str) -> None:
        with self._lock:
            self._counts[(store, operation)] = self._counts.get((store, operation), 0) + 1

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


STORE_ERRORS = StoreErrors()


def statement_operation(statement: str | None) -> str:
    """A statement's verb as an ``operation`` label (bounded: ``DATABASE_OPERATIONS``)."""
    if statement is None:
        return "connect"
    words = statement.split(None, 1)
    verb = words[0].lower() if words else ""
    if verb == "with":  # a CTE: the verb comes later; counted by what it most likely is
        verb = "select"
    return verb if verb in DATABASE_OPERATIONS else "other"


def count_database_errors(engine: Engine, errors: StoreErrors = STORE_ERRORS) -> None:
    """Count every failure the engine reports (statements, and connections that could not be made)."""

    def failed(context: Any) -> None:
        errors.note("database", statement_operation(context.statement))

    event.listen(engine, "handle_error", failed)


class CountedObjectStore:
    """An object store whose failing operations are counted (``ObjectMissing`` is not a failure)."""

    def __init__(self, inner: Any, missing: type[Exception], errors: StoreErrors = STORE_ERRORS) -> None:
        self.inner = inner
        self.url = getattr(inner, "url", "")
        self._missing = missing
        self._errors = errors

    def _counted(self, operation: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except self._missing:
            raise
        except Exception:
            self._errors.note("objects", operation)
            raise

    def put(self, key: str, data: bytes) -> None:
        self._counted("put", self.inner.put, key, data)

    def put_file(self, key: str, source: Any) -> None:
        self._counted("put", self.inner.put_file, key, source)

    def get(self, key: str) -> bytes:
        return self._counted("get", self.inner.get, key)

    def open(self, key: str, start: int = 0, length: int | None = None) -> Any:
        return self._counted("open", self.inner.open, key, start, length)

    def delete(self, key: str) -> None:
        self._counted("delete", self.inner.delete, key)

    def keys(self, prefix: str = "") -> dict[str, float]:
        return self._counted("keys", self.inner.keys, prefix)


class StoreErrorsCollector(Collector):
    def __init__(self, errors: StoreErrors = STORE_ERRORS) -> None:
        self.errors = errors

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("harmony_store_errors", "Store operations that failed in this process, by "
                                     "store (database, objects) and operation", labels=["store", "operation"])
        for (store, operation), count in sorted(self.errors.counts().items()):
            family.add_metric([store, operation], count)
        yield family
