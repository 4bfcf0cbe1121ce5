"""The metrics behind the alerts HarmonyQuotaNearlySpent, HarmonyBatchOverdue and HarmonyStoreErrors, on real
stores (SQLite, a directory object store) and a real router: each key's usage against its quota (settled through
the quota ledger, never the secret), batches past their completion window and batches ended (by the router's own
batch runner), and store operations that failed."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from starlette.testclient import TestClient

from services.auth.audit import NoSink
from services.auth.gate import Gate
from services.auth.keys import KeyStore
from services.auth.quota import QuotaLedger
from services.auth.quota_metrics import quota_usage_gauge
from services.batches.files import FileStore, Owner
from services.batches.metrics import BatchMetrics
from services.batches.store import BatchStore
from services.batches.wire import BatchCreate
from services.core.contracts.specs import BatchSettings, parse_config
from services.router.app import build_table, create_router_app
from services.store import open_database
from services.store.db import Database
from services.store.errors import CountedObjectStore, StoreErrors, count_database_errors
from services.store.objects import DirectoryObjectStore, ObjectMissing
from services.store.schema import batches

SPEECH = "/v1/audio/speech"


@pytest.fixture
def db(tmp_path):
    database = open_database(url=f"sqlite:///{tmp_path / 'harmony.db'}")
    yield database
    database.dispose()


def test_each_keys_usage_against_its_quota_without_its_secret(db):
    keys, ledger = KeyStore(db), QuotaLedger(db)
    metered, secret = keys.create("meeting-notes", audio_seconds_per_day=100, audio_seconds_per_month=1000)
    free, _ = keys.create("unmetered")
    gone, _ = keys.create("revoked", audio_seconds_per_day=10)
    keys.revoke(gone.id)
    for key in (metered, free, gone):
        ledger.settle(key.id, [], requests=1, audio_seconds_in=80.0, audio_seconds_out=15.0)
    registry = CollectorRegistry()
    registry.register(quota_usage_gauge(db))

    def ratio(key, period):
        return registry.get_sample_value("harmony_key_quota_used_ratio",
                                         {"key_id": key.id, "key_name": key.name, "period": period})

    assert ratio(metered, "day") == pytest.approx(0.95) and ratio(metered, "month") == pytest.approx(0.095)
    assert ratio(free, "day") is None and ratio(gone, "day") is None  # no quota, or no longer a key
    exposition = generate_latest(registry).decode()
    assert secret not in exposition and secret[8:20] not in exposition


def _batch_in(db: Database, objects_dir, lines: int = 1) -> str:
    files = FileStore(db, DirectoryObjectStore(objects_dir))
    store = BatchStore(db, files, BatchSettings())
    body = "".join(f'{{"custom_id": "c{i}", "method": "POST", "url": "{SPEECH}", "body": {{"model": "m", '
                   f'"input": "hi", "voice": "v"}}}}\n' for i in range(lines))
    source = files.create(body.encode(), "in.jsonl", "batch", None, None)
    return store.create(BatchCreate(input_file_id=source.id, endpoint=SPEECH), Owner(None), None).id


def _past_its_window(db: Database, batch_id: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(update(batches).where(batches.c.id == batch_id).values(expires_at=int(time.time()) - 60))


def test_a_batch_past_its_window_is_overdue_until_a_runner_ends_it_expired(db, tmp_path):
    batch_id = _batch_in(db, tmp_path / "data" / "objects")
    _batch_in(db, tmp_path / "data" / "objects")  # within its window: not overdue
    registry = CollectorRegistry()
    BatchMetrics(registry, lambda: db)
    assert registry.get_sample_value("harmony_batches_overdue") == 0
    _past_its_window(db, batch_id)
    assert registry.get_sample_value("harmony_batches_overdue") == 1
    assert registry.get_sample_value("harmony_batches_total", {"status": "expired"}) == 0

    # the router's own runner (no models: its requests never run) ends it expired, and says so on /metrics
    key, _ = KeyStore(db).create("batch-key", audio_seconds_per_day=10)
    QuotaLedger(db).settle(key.id, [], requests=1, audio_seconds_in=5.0)
    config = parse_config({"models": [], "data_dir": str(tmp_path / "data")})
    app = create_router_app(config, build_table(config, {}), gate=Gate(db, required=False, sink=NoSink()))
    with TestClient(app) as client:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            scraped = client.get("/metrics").text
            if 'harmony_batches_total{status="expired"} 1.0' in scraped:
                break
            time.sleep(0.1)
        assert 'harmony_batches_total{status="expired"} 1.0' in scraped, scraped
        assert "\nharmony_batches_overdue 0.0" in scraped
        assert 'harmony_batches_total{status="completed"} 0.0' in scraped
        assert 'harmony_store_errors_total{operation="put",store="objects"}' in scraped
        assert f'harmony_key_quota_used_ratio{{key_id="{key.id}",key_name="batch-key",period="day"}} 0.5' in scraped


def test_failed_database_statements_and_object_operations_are_counted(db, tmp_path):
    errors = StoreErrors()
    count_database_errors(db.engine, errors)
    with pytest.raises(DBAPIError), db.engine.connect() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    with pytest.raises(DBAPIError), db.engine.begin() as conn:
        conn.execute(text("INSERT INTO no_such_table VALUES (1)"))
    objects = CountedObjectStore(DirectoryObjectStore(tmp_path / "objects"), ObjectMissing, errors)
    objects.put("a", b"x")
    with pytest.raises(ObjectMissing):
        objects.get("missing")  # an answer, not a failure
    with pytest.raises(OSError):
        objects.put("a/b", b"y")  # "a" is a file: no directory can be made under it
    with pytest.raises(OSError):
        objects.get("a/b")
    counts = errors.counts()
    assert counts[("database", "select")] == 1 and counts[("database", "insert")] == 1
    assert counts[("objects", "put")] == 1 and counts[("objects", "get")] == 1
    assert sum(counts.values()) == 4


def test_a_database_that_cannot_be_reached_counts_as_connect_errors():
    errors = StoreErrors()
    unreachable = Database("postgresql+psycopg://harmony@127.0.0.1:9/harmony?connect_timeout=2")
    count_database_errors(unreachable.engine, errors)
    with pytest.raises(DBAPIError), unreachable.engine.connect():
        pass
    unreachable.dispose()
    assert errors.counts()[("database", "connect")] == 1


def test_a_gauge_read_at_scrape_time_gives_no_sample_rather_than_a_failed_scrape(db, caplog):
    """The quota and overdue gauges (QueryGauge): no database yet, or one that does not answer, is no sample and a
    warning; the scrape itself succeeds."""
    from services.store.query_gauge import QueryGauge

    def rows(database: Database, now: float):
        with database.engine.connect() as conn:
            return [(("a",), float(conn.execute(text("SELECT count(*) FROM no_such_table")).scalar_one()))]

    opened: list[Database] = []
    registry = CollectorRegistry()
    registry.register(QueryGauge("harmony_test_rows", "rows", ["name"], rows, lambda: opened[0] if opened else None))
    assert "harmony_test_rows" not in generate_latest(registry).decode()  # not open yet
    opened.append(db)
    assert "harmony_test_rows" not in generate_latest(registry).decode()  # the query fails
    assert "harmony_test_rows for metrics: the database did not answer" in caplog.text
    with db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE no_such_table (x INTEGER)"))
        conn.execute(text("INSERT INTO no_such_table VALUES (1), (2)"))
    assert registry.get_sample_value("harmony_test_rows", {"name": "a"}) == 2
