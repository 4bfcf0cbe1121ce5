"""Quota holds on SQLite and on a real PostgreSQL: reservations that concurrent routers cannot both pass, settled to
the real figure, released, expired when their router dies; open realtime sessions counted per key."""

from __future__ import annotations

import threading

import pytest

from services.auth.limits import QuotaExceeded, day_of
from services.auth.quota import HOLD_TTL_S, Hold, QuotaLedger
from services.store import open_database
from tests.unit.test_store import Clock


@pytest.fixture
def db(database_url):
    database = open_database(url=database_url)
    yield database
    database.dispose()


def usage(db, key_id: str) -> dict:
    from services.auth.limits import Limits

    rows = Limits(db).usage(key_id)
    return rows[0] if rows else {}


def test_holds_count_until_settled_to_the_real_figure_or_released(db):
    clock = Clock("2026-03-31T12:00:00")
    ledger = QuotaLedger(db, clock)
    first = ledger.reserve("key_a", 4.0, per_day=10, per_month=None)
    second = ledger.reserve("key_a", 4.0, per_day=10, per_month=None)
    assert isinstance(first, Hold) and isinstance(second, Hold)
    third = ledger.reserve("key_a", 4.0, per_day=10, per_month=None)  # 8 held: something left, so it is admitted
    assert isinstance(third, Hold)
    refused = ledger.reserve("key_a", 1.0, per_day=10, per_month=None)  # 12 held: nothing left
    assert isinstance(refused, QuotaExceeded) and refused.period == "day" and refused.held == 12.0
    assert refused.used == 0.0 and refused.retry_after_s == 5.0  # held, not spent: worth trying again soon
    assert ledger.exceeded("key_a", per_day=10, per_month=None) is not None
    assert ledger.reserve("key_b", 1.0, per_day=10, per_month=None) is not None  # keys do not share holds
    ledger.release([third])
    ledger.settle("key_a", [first], requests=1, audio_seconds_in=2.5)  # it used less than it held
    assert ledger.exceeded("key_a", per_day=10, per_month=None) is None  # 2.5 settled + 4 held
    ledger.settle("key_a", [second], requests=1, audio_seconds_out=7.5)
    spent = ledger.exceeded("key_a", per_day=10, per_month=None)
    assert spent.used == 10.0 and spent.held == 0.0 and spent.retry_after_s == 12 * 3600  # spent: until midnight
    row = usage(db, "key_a")
    assert (row["day"], row["requests"], row["audio_seconds_in"], row["audio_seconds_out"]) == (
        day_of(clock.now), 2, 2.5, 7.5)
    assert ledger.open_holds() == 1  # key_b's


def test_the_month_quota_counts_every_day_of_the_month(db):
    clock = Clock("2026-03-30T12:00:00")
    ledger = QuotaLedger(db, clock)
    ledger.settle("key_a", [], audio_seconds_in=30.0)
    clock.now += 86_400
    assert isinstance(ledger.reserve("key_a", 5.0, per_day=100, per_month=34), Hold)  # 30 settled + 0 held < 34
    refused = ledger.reserve("key_a", 5.0, per_day=100, per_month=34)
    assert isinstance(refused, QuotaExceeded) and refused.period == "month" and refused.used == 30.0


def test_concurrent_reservations_cannot_both_take_the_last_seconds(db):
    """Sixteen threads, as routers would, each reserve 3 s against 10 s: holds are granted while settled plus held
    is under the quota, so exactly four pass (0, 3, 6, 9 held before each), in any order: at most one past it."""
    ledger = QuotaLedger(db, Clock("2026-03-31T12:00:00"))
    results: list[object] = []
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        results.append(ledger.reserve("key_a", 3.0, per_day=10, per_month=None))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = [r for r in results if isinstance(r, Hold)]
    assert len(results) == 16 and len(granted) == 4
    assert sum(h.seconds for h in granted) == 12.0  # the quota plus less than one request


def test_a_hold_whose_router_died_expires_and_a_living_one_is_renewed(db):
    clock = Clock("2026-03-31T12:00:00")
    dead, alive = QuotaLedger(db, clock), QuotaLedger(db, clock)
    dead.reserve("key_a", 6.0, per_day=10, per_month=None)
    alive.reserve("key_a", 3.0, per_day=10, per_month=None)
    assert alive.exceeded("key_a", per_day=9, per_month=None) is not None
    clock.now += HOLD_TTL_S * 2 / 3
    assert alive.renew() == 1  # the dead router renews nothing
    clock.now += HOLD_TTL_S * 2 / 3
    still = alive.exceeded("key_a", per_day=9, per_month=None)
    assert still is None  # only the living router's 3 s count now
    assert alive.exceeded("key_a", per_day=3, per_month=None).held == 3.0


def test_open_realtime_sessions_are_counted_per_key(db):
    ledger = QuotaLedger(db, Clock())
    first, second = ledger.open_session("key_a", 2), ledger.open_session("key_a", 2)
    assert first is not None and second is not None and first.kind == "session"
    assert ledger.open_session("key_a", 2) is None
    assert ledger.open_session("key_b", 2) is not None
    ledger.release([first])
    assert ledger.open_session("key_a", 2) is not None
    assert ledger.exceeded("key_a", per_day=1, per_month=None) is None  # sessions hold no audio
