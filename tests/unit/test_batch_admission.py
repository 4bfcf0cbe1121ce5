"""BatchAdmission on its own: the work admitted by priority, the learned pace, and the deadline check (429)."""

from __future__ import annotations

import time

import pytest

from services.core.contracts.errors import QueueFull, RequestTimeout
from services.core.runtime.batch_admission import FINISH_WITHIN, BatchAdmission
from services.core.runtime.metrics import Metrics


def test_an_idle_model_admits_any_request_however_long():
    admission = BatchAdmission("m")
    admission.check(time.monotonic() + 0.01, units=1000, priority=0)  # nothing ahead: it learns how long work takes


def test_a_request_past_its_deadline_is_refused_as_a_timeout():
    with pytest.raises(RequestTimeout):
        BatchAdmission("m").check(time.monotonic() - 0.001, units=1, priority=0)


def test_a_newcomer_that_cannot_finish_behind_the_admitted_work_is_refused_with_the_time_to_wait():
    admission = BatchAdmission("m")  # 1 s a unit until it learns
    admission.admitted(0, 8)
    admission.check(time.monotonic() + 100, units=2, priority=0)  # 10 s of work in 50 s allowed
    with pytest.raises(QueueFull) as refused:
        admission.check(time.monotonic() + 10, units=2, priority=0)  # 10 s of work in 5 s allowed
    assert refused.value.code == "deadline_unreachable" and refused.value.status_code == 429
    excess_s = 10 - 10 * FINISH_WITHIN  # 5 s too much work (and a moment, as the clock moved on): rounded up
    assert int(refused.value.headers["Retry-After"]) in (excess_s, excess_s + 1)


def test_only_work_of_the_same_or_a_higher_priority_counts_ahead():
    admission = BatchAdmission("m")
    admission.admitted(1, 50)  # batch-priority work
    admission.check(time.monotonic() + 10, units=1, priority=0)  # interactive goes before it
    with pytest.raises(QueueFull):
        admission.check(time.monotonic() + 10, units=1, priority=1)
    assert admission.ahead(0) == 0 and admission.ahead(1) == 50 and admission.outstanding == 50


def test_done_work_no_longer_counts_and_the_in_flight_gauge_follows_requests():
    metrics = Metrics("stt")
    admission = BatchAdmission("m", metrics=metrics)

    def gauge() -> float:
        return metrics.registry.get_sample_value("harmony_in_flight_requests", {"model": "m"})

    assert gauge() == 0  # the series exists before any request
    admission.admitted(0, 3)
    admission.admitted(-1, 1)
    assert gauge() == 2 and admission.outstanding == 4
    admission.done(0, 3)
    admission.answered()
    assert gauge() == 1 and admission.outstanding == 1 and admission.requests_in_flight == 1


def test_the_pace_is_learned_cautiously_from_the_slower_recent_batches():
    admission = BatchAdmission("m", instances=2)
    for _ in range(8):
        admission.learn(0.2, units=2)  # 0.05 s a unit per instance
    settled = admission.unit_s
    assert 0.05 < settled < 0.3  # the average moves from its first guess (1 s) towards the truth
    for _ in range(3):
        admission.learn(4.0, units=2)  # slow batches (contention: 1 s a unit): the estimate follows them at once
    assert admission.recent_unit_s < 0.7  # where the average alone would still be
    assert admission.unit_s == pytest.approx(1.0)
    assert admission.finishes_in_time(time.monotonic() + 10, time.monotonic())
    assert not admission.finishes_in_time(time.monotonic() + 0.01, time.monotonic())  # a batch takes ~1 s lately
