"""DynamicBatcher: batch closing, off-loop execution, back-pressure, deadlines, cancellation, failures, shutdown.

The batch callable here is a plain Python function that records what it receives:
that is all the batcher needs, so these tests exercise the batcher and nothing else.
Timing bounds are deliberately loose (the test machine is small and noisy).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from services.core.contracts.errors import QueueFull, RequestTimeout, ServiceUnavailable
from services.core.contracts.specs import BatchingSpec
from services.core.runtime import request_state
from services.core.runtime.batching import DynamicBatcher
from services.core.runtime.metrics import Metrics
from services.core.tasks.wanted import Abandoned, Wanted, all_wanted


class Recorder:
    """A batch callable: records every batch (items, time, thread) and returns item * 2."""

    def __init__(self, *, sleep_s: float = 0.0, gate: threading.Event | None = None,
                 result: Callable[[Sequence[Any]], Sequence[Any]] | None = None) -> None:
        self.sleep_s = sleep_s
        self.gate = gate
        self.result = result
        self.batches: list[list[Any]] = []
        self.times: list[float] = []
        self.threads: list[threading.Thread] = []
        self.started = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[Any]) -> Sequence[Any]:
        with self._lock:
            self.batches.append(list(items))
            self.times.append(time.monotonic())
            self.threads.append(threading.current_thread())
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(timeout=10), "test never opened the gate"
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.result is not None:
            return self.result(items)
        return [item * 2 for item in items]

    @property
    def seen(self) -> list[Any]:
        return [item for batch in self.batches for item in batch]


@pytest.fixture
async def make_batcher():
    """Build batchers and stop every one of them at teardown (so no worker thread outlives a test)."""
    made: list[DynamicBatcher] = []
    gates: list[threading.Event] = []

    def factory(run_batch, *, gate: threading.Event | None = None, metrics: Metrics | None = None,
                name: str = "m", **spec: Any) -> DynamicBatcher:
        batcher = DynamicBatcher(name, run_batch, BatchingSpec(**spec), metrics=metrics)
        made.append(batcher)
        if gate is not None:
            gates.append(gate)
        return batcher

    yield factory
    for gate in gates:
        gate.set()
    for batcher in made:
        await asyncio.wait_for(batcher.stop(), timeout=10)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


# batch closing


async def test_batch_closes_at_max_batch_size_and_remainder_after_delay(make_batcher):
    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=4, max_queue_delay_ms=1000)
    t0 = time.monotonic()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 2 for i in range(10)]
    assert [len(b) for b in rec.batches] == [4, 4, 2]
    assert sorted(rec.seen) == list(range(10))
    # the two full batches did not wait for the delay; the partial one did
    assert rec.times[0] - t0 < 0.7
    assert rec.times[1] - t0 < 0.7
    assert rec.times[2] - t0 >= 0.9
    assert list(batcher.stats.sizes) == [4, 4, 2]


async def test_lone_item_runs_after_max_queue_delay(make_batcher):
    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=8, max_queue_delay_ms=400)
    t0 = time.monotonic()
    task = asyncio.create_task(batcher.submit(21))
    await asyncio.sleep(0.1)
    assert rec.batches == [], "a lone item ran before max_queue_delay_ms elapsed"
    assert not task.done()
    assert await task == 42
    assert rec.batches == [[21]]
    waited = rec.times[0] - t0
    assert 0.35 <= waited < 3.0


async def test_zero_delay_runs_without_waiting(make_batcher):
    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=8, max_queue_delay_ms=0)
    t0 = time.monotonic()
    assert await batcher.submit(5) == 10
    assert time.monotonic() - t0 < 1.0


# execution off the event loop


async def test_batches_run_off_the_event_loop(make_batcher):
    rec = Recorder(sleep_s=0.3)
    batcher = make_batcher(rec, max_batch_size=2, max_queue_delay_ms=0)
    ticks = 0
    stop_ticking = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop_ticking.is_set():
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        assert await batcher.submit(3) == 6
    finally:
        stop_ticking.set()
        await ticking
    assert rec.threads[0] is not threading.main_thread()
    assert rec.threads[0] is not threading.current_thread()
    # a batch blocking the loop for 0.3 s would allow at most a tick or two
    assert ticks >= 8, f"event loop ticked only {ticks} times during a 0.3 s batch"


# back-pressure


async def test_full_queue_raises_queue_full_and_wait_for_space_waits(make_batcher):
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2, timeout_s=10)

    first = asyncio.create_task(batcher.submit(0))
    await wait_until(rec.started.is_set)  # item 0 is running (off the queue), the worker is blocked
    queued = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await wait_until(lambda: batcher.depth == 2)

    with pytest.raises(QueueFull) as info:
        await batcher.submit(99)
    assert info.value.status_code == 429
    retry_after = info.value.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1

    waiting = asyncio.create_task(batcher.submit(3, wait_for_space=True))
    await asyncio.sleep(0.1)
    assert not waiting.done(), "wait_for_space=True should wait for room, not fail or run"
    assert batcher.depth == 2

    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, *queued, waiting), timeout=5) == [0, 2, 4, 6]
    assert 99 not in rec.seen
    assert sorted(rec.seen) == [0, 1, 2, 3]


async def test_wait_for_space_times_out_at_deadline(make_batcher):
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=1, timeout_s=10)
    first = asyncio.create_task(batcher.submit(0))
    await wait_until(rec.started.is_set)
    second = asyncio.create_task(batcher.submit(1))
    await wait_until(lambda: batcher.depth == 1)
    with pytest.raises(RequestTimeout) as info:
        await batcher.submit(2, wait_for_space=True, deadline=time.monotonic() + 0.1)
    assert info.value.status_code == 504
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), timeout=5) == [0, 2]
    assert 2 not in rec.seen


# deadlines


async def test_slow_batch_raises_request_timeout(make_batcher):
    rec = Recorder(sleep_s=0.6)
    batcher = make_batcher(rec, max_batch_size=4, max_queue_delay_ms=0, timeout_s=0.15)
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        await batcher.submit(1)
    assert info.value.status_code == 504
    assert time.monotonic() - t0 < 0.55, "the caller should hear about the timeout before the batch ends"


async def test_item_expired_while_queued_is_never_computed(make_batcher):
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=10)
    first = asyncio.create_task(batcher.submit("a"))
    await wait_until(rec.started.is_set)  # the worker is busy with "a"

    with pytest.raises(RequestTimeout):  # a part of an admitted request: queued, then past its deadline
        await batcher.submit("late", deadline=time.monotonic() + 0.1, wait_for_space=True)
    with pytest.raises(RequestTimeout):
        await batcher.submit("already-late", deadline=time.monotonic() - 1)

    gate.set()
    assert await asyncio.wait_for(first, timeout=5) == "aa"
    assert await asyncio.wait_for(batcher.submit("b"), timeout=5) == "bb"
    assert rec.seen == ["a", "b"]
    # "late" was queued and dropped; "already-late" was refused before it was queued
    assert batcher.stats.dropped_cancelled + batcher.stats.dropped_expired == 1
    assert batcher.depth == 0


# cancellation


async def test_cancelled_caller_drops_item(make_batcher):
    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=4, max_queue_delay_ms=300)
    keep = asyncio.create_task(batcher.submit(1))
    gone = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.05)
    assert rec.batches == []
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await keep == 2
    assert rec.batches == [[1]]
    assert batcher.stats.dropped_cancelled == 1


async def test_cancelled_only_item_never_runs(make_batcher):
    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=4, max_queue_delay_ms=100)
    gone = asyncio.create_task(batcher.submit(7))
    await asyncio.sleep(0.02)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    await asyncio.sleep(0.3)  # well past the batch delay
    assert rec.batches == []
    assert batcher.depth == 0
    assert await batcher.submit(8) == 16  # the loop is still alive


class TwoSteps:
    """A batch in two steps, as Whisper's fallback ladder is: the first for every item, then (once the test opens the
    gate) a second only for the items still wanted; the others are answered ``Abandoned``."""

    def __init__(self) -> None:
        self.first = threading.Event()
        self.gate = threading.Event()
        self.second: list[Any] = []

    def __call__(self, items: Sequence[Any], wanted: Wanted = all_wanted) -> list[Any]:
        self.first.set()
        assert self.gate.wait(timeout=10), "test never opened the gate"
        self.second = [item for i, item in enumerate(items) if wanted(i)]
        return [item * 2 if wanted(i) else Abandoned() for i, item in enumerate(items)]


async def test_a_running_batch_hears_which_items_are_still_wanted(make_batcher):
    steps = TwoSteps()
    metrics = Metrics("test")
    batcher = make_batcher(steps, gate=steps.gate, metrics=metrics, max_batch_size=2, max_queue_delay_ms=50)
    keep = asyncio.create_task(batcher.submit(1))
    gone = asyncio.create_task(batcher.submit(2))
    await wait_until(steps.first.is_set)  # both items are computing
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    steps.gate.set()
    assert await keep == 2
    assert steps.second == [1], "the second step ran for an item nobody waited for"
    assert batcher.stats.abandoned == 1
    assert metrics.abandoned_items.labels("m")._value.get() == 1


async def test_stop_gives_up_queued_and_computing_work_after_its_grace(make_batcher):
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0)
    computing = asyncio.create_task(batcher.submit(1))
    queued = asyncio.create_task(batcher.submit(2))
    await wait_until(lambda: rec.started.is_set() and batcher.depth == 1)
    t0 = time.monotonic()
    await asyncio.wait_for(batcher.stop(grace_s=0.2), timeout=5)
    assert time.monotonic() - t0 < 1.5, "stop() waited for a batch that never ends"
    for task in (computing, queued):
        with pytest.raises(ServiceUnavailable) as info:
            await task
        assert info.value.code == "shutting_down"
    assert rec.seen == [1], "a queued item ran after the batcher gave up"


# failures


async def test_exception_fails_whole_batch_and_next_batch_works(make_batcher):
    def run(items):
        if "bad" in items:
            raise ValueError("boom")
        return [item * 2 for item in items]

    rec = Recorder(result=run)
    batcher = make_batcher(rec, max_batch_size=3, max_queue_delay_ms=1000)
    outcomes = await asyncio.gather(*(batcher.submit(x) for x in ("bad", "x", "y")), return_exceptions=True)
    assert len(rec.batches) == 1
    for outcome in outcomes:
        assert isinstance(outcome, ValueError) and str(outcome) == "boom"

    next_batch = await asyncio.gather(*(batcher.submit(x) for x in ("p", "q", "r")))
    assert next_batch == ["pp", "qq", "rr"]


async def test_per_item_exception_fails_only_that_item(make_batcher):
    def run(items):
        return [KeyError(item) if item == "bad" else item * 2 for item in items]

    batcher = make_batcher(Recorder(result=run), max_batch_size=3, max_queue_delay_ms=1000)
    outcomes = await asyncio.gather(*(batcher.submit(x) for x in ("a", "bad", "c")), return_exceptions=True)
    assert outcomes[0] == "aa" and outcomes[2] == "cc"
    assert isinstance(outcomes[1], KeyError)


async def test_wrong_number_of_results_fails_items(make_batcher):
    rec = Recorder(result=lambda items: [item * 2 for item in items][:-1])
    batcher = make_batcher(rec, max_batch_size=2, max_queue_delay_ms=1000, timeout_s=5)
    outcomes = await asyncio.wait_for(
        asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True), timeout=5)
    for outcome in outcomes:
        assert isinstance(outcome, RuntimeError)
        assert "1 results for 2 items" in str(outcome)


# shutdown


async def test_stop_drains_queue_then_refuses(make_batcher):
    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=2, max_queue_delay_ms=5000)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
    await wait_until(lambda: len(rec.batches) == 1 and batcher.depth == 1)  # 2 ran, 1 waits for the delay
    t0 = time.monotonic()
    await asyncio.wait_for(batcher.stop(), timeout=5)
    assert time.monotonic() - t0 < 2.0, "stop() should not wait out the batch delay"
    assert [t.result() for t in tasks] == [0, 2, 4]
    assert sorted(rec.seen) == [0, 1, 2]
    with pytest.raises(ServiceUnavailable) as info:
        await batcher.submit(9)
    assert info.value.status_code == 503
    assert 9 not in rec.seen


# metrics


async def test_metrics_record_batch_sizes(make_batcher):
    metrics = Metrics("test")
    batcher = make_batcher(Recorder(), metrics=metrics, name="tiny", max_batch_size=4, max_queue_delay_ms=50)
    await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    value = metrics.registry.get_sample_value
    assert value("harmony_batch_size_count", {"model": "tiny"}) == 3
    assert value("harmony_batch_size_sum", {"model": "tiny"}) == 10
    assert value("harmony_batch_size_bucket", {"model": "tiny", "le": "2.0"}) == 1
    assert value("harmony_batch_size_bucket", {"model": "tiny", "le": "4.0"}) == 3
    assert value("harmony_queue_wait_seconds_count", {"model": "tiny"}) == 10
    assert value("harmony_inference_seconds_count", {"model": "tiny"}) == 3
    assert value("harmony_queue_depth", {"model": "tiny"}) == 0


async def test_instances_run_batches_at_the_same_time(make_batcher):
    """With instances=2 a second batch starts while the first is still running, on another thread."""
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = make_batcher(recorder, gate=gate, max_batch_size=2, max_queue_delay_ms=0, instances=2)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await wait_until(lambda: len(recorder.batches) == 2)
    assert len({t.ident for t in recorder.threads}) == 2  # both batches are in flight on separate workers
    gate.set()
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6]


async def test_one_instance_runs_one_batch_at_a_time(make_batcher):
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = make_batcher(recorder, gate=gate, max_batch_size=2, max_queue_delay_ms=0, instances=1)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await wait_until(lambda: len(recorder.batches) == 1)
    await asyncio.sleep(0.2)
    assert len(recorder.batches) == 1
    gate.set()
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6]


async def test_lower_priority_value_goes_first_fifo_within_a_priority(make_batcher):
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = make_batcher(recorder, gate=gate, max_batch_size=1, max_queue_delay_ms=0)
    blocker = asyncio.create_task(batcher.submit(0))
    await wait_until(lambda: len(recorder.batches) == 1)  # the worker is busy; the rest queue up
    tasks = [asyncio.create_task(batcher.submit(i, priority=p)) for i, p in [(1, 1), (2, 1), (3, 0), (4, 0)]]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *tasks)
    assert recorder.seen == [0, 3, 4, 1, 2]


async def test_lower_ranks_go_first_within_a_priority_for_a_bounded_time(make_batcher):
    # a speech's first sentences (rank 0) go before the second (1) and later (2) ones of requests admitted earlier
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = make_batcher(recorder, gate=gate, max_batch_size=1, max_queue_delay_ms=0)
    blocker = asyncio.create_task(batcher.submit(0))
    await wait_until(lambda: len(recorder.batches) == 1)
    tasks = [asyncio.create_task(batcher.submit(i, rank=r)) for i, r in [(1, 2), (2, 1), (3, 0), (4, 1), (5, 0)]]
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *tasks)
    assert recorder.seen == [0, 3, 5, 2, 4, 1]
    # held back longer than its rank_hold_s, an item goes by its deadline again: never starved by newcomers
    gate.clear()
    recorder.batches.clear()
    blocker = asyncio.create_task(batcher.submit(10))
    await wait_until(lambda: len(recorder.batches) == 1)
    old = asyncio.create_task(batcher.submit(11, rank=2, rank_hold_s=0.05))
    await asyncio.sleep(0.1)
    new = asyncio.create_task(batcher.submit(12, rank=0))
    await asyncio.sleep(0.02)
    gate.set()
    await asyncio.gather(blocker, old, new)
    assert recorder.seen == [10, 11, 12]


async def test_realtime_priority_from_the_request_goes_before_interactive_work(make_batcher):
    """The ``realtime`` priority (-1) a request carries (the router's final decode of a live turn) is its items'
    priority: they overtake interactive items queued before them."""
    from services.core.runtime import timing

    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = make_batcher(recorder, gate=gate, max_batch_size=1, max_queue_delay_ms=0)
    blocker = asyncio.create_task(batcher.submit(0))
    await wait_until(lambda: len(recorder.batches) == 1)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.02)
    token = request_state.TIMING.set(timing.RequestTiming(priority=timing.PRIORITIES["realtime"]))
    try:
        tasks.append(asyncio.create_task(batcher.submit(3)))
    finally:
        request_state.TIMING.reset(token)
    await asyncio.sleep(0.05)
    gate.set()
    await asyncio.gather(blocker, *tasks)
    assert recorder.seen == [0, 3, 1, 2]


async def test_waiting_items_are_shared_between_idle_instances(make_batcher):
    """Four items and two idle instances make two batches of two, not one batch of four and an idle worker."""
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = make_batcher(recorder, gate=gate, max_batch_size=4, max_queue_delay_ms=200, instances=2)
    tasks = [asyncio.create_task(batcher.submit(i)) for i in range(4)]
    await wait_until(lambda: len(recorder.batches) == 2)
    assert sorted(len(b) for b in recorder.batches) == [2, 2]
    gate.set()
    assert await asyncio.gather(*tasks) == [0, 2, 4, 6]


async def test_a_request_learns_its_queue_and_compute_time(make_batcher):
    from services.core.runtime import timing

    rec = Recorder(sleep_s=0.05)
    batcher = make_batcher(rec, max_batch_size=4, max_queue_delay_ms=0)
    spent = timing.RequestTiming()
    token = request_state.TIMING.set(spent)
    try:
        assert await batcher.submit(1) == 2
        assert await batcher.submit(2) == 4
    finally:
        request_state.TIMING.reset(token)
    assert spent.queue_s >= 0 and spent.compute_s >= 0.1  # two batches of at least 50 ms each


# deadlines the caller gives


async def test_a_request_that_cannot_start_before_its_callers_deadline_is_refused_at_once(make_batcher):
    from services.core.runtime import timing

    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=60)
    running = asyncio.create_task(batcher.submit("a"))
    await wait_until(rec.started.is_set)
    queued = [asyncio.create_task(batcher.submit(x)) for x in "bcd"]
    await wait_until(lambda: batcher.depth == 3)

    token = request_state.TIMING.set(timing.RequestTiming(deadline=time.monotonic() + 0.5))
    try:
        with pytest.raises(QueueFull) as refused:  # three batches ahead, about a second each
            await batcher.submit("hurried")
        assert refused.value.code == "deadline_unreachable" and refused.value.headers["Retry-After"]
        # a continuation of an admitted request is not refused: it waits, up to the same deadline
        with pytest.raises(RequestTimeout):
            await batcher.submit("continued", wait_for_space=True)
    finally:
        request_state.TIMING.reset(token)
    patient = asyncio.create_task(batcher.submit("patient"))  # no deadline of its own: the model's timeout
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, *queued, patient), timeout=10) == \
        ["aa", "bb", "cc", "dd", "patientpatient"]
    assert "hurried" not in rec.seen and "continued" not in rec.seen


# reservations: a request of many parts is admitted as a whole


async def test_an_admitted_requests_later_parts_go_before_a_newcomers(make_batcher):
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=60)
    running = asyncio.create_task(batcher.submit("x"))
    await wait_until(rec.started.is_set)
    with batcher.reserve(2) as admitted:
        first = asyncio.create_task(admitted.submit("a1"))
        await wait_until(lambda: batcher.depth == 1)
        await asyncio.sleep(0.01)  # the newcomer arrives later, so its deadline is later
        newcomer = asyncio.create_task(batcher.submit("b1", wait_for_space=True))
        await wait_until(lambda: batcher.depth == 2)
        second = asyncio.create_task(admitted.submit("a2"))  # queued last, but due first
        await wait_until(lambda: batcher.depth == 3)
        gate.set()
        await asyncio.wait_for(asyncio.gather(running, first, second, newcomer), timeout=10)
    assert rec.seen == ["x", "a1", "a2", "b1"]


async def test_reserved_work_counts_ahead_of_a_newcomer_before_it_is_queued(make_batcher):
    from services.core.runtime import timing

    batcher = make_batcher(Recorder(), max_batch_size=1, max_queue_delay_ms=0, timeout_s=600)
    assert await batcher.submit(1) == 2  # the model has run: about 1 s a unit is its guess until it learns
    batcher.admission.recent_unit_s = 1.0  # as if a unit took a second lately
    reservation = batcher.reserve(20)  # 20 s of admitted work, nothing of it queued yet
    assert batcher.depth == 0 and batcher.outstanding == 20
    token = request_state.TIMING.set(timing.RequestTiming(deadline=time.monotonic() + 10))
    try:
        with pytest.raises(QueueFull) as refused:
            batcher.reserve(1)
        assert refused.value.code == "deadline_unreachable"
        assert int(refused.value.headers["Retry-After"]) >= 10  # 21 s of work against 7 s allowed
        reservation.release()  # the request ended early: its place is given back
        assert batcher.outstanding == 0
        with batcher.reserve(1) as hurried:
            assert await hurried.submit(3) == 6
    finally:
        request_state.TIMING.reset(token)
    assert batcher.outstanding == 0


async def test_a_reservation_is_released_as_its_parts_finish_fail_or_are_abandoned(make_batcher):
    def half_fail(items):
        return [ValueError("bad") if item < 0 else item for item in items]

    batcher = make_batcher(Recorder(result=half_fail), max_batch_size=4, max_queue_delay_ms=0)
    with batcher.reserve(3) as work:
        assert await work.submit(5) == 5
        assert batcher.outstanding == 2
        with pytest.raises(ValueError):
            await work.submit(-1)
        assert batcher.outstanding == 1
        # a part beyond what was reserved (a window's tail) never takes the count below zero
        assert await work.submit(7) == 7 and await work.submit(8) == 8
        assert batcher.outstanding == 0
    with batcher.reserve(5):
        assert batcher.outstanding == 5  # leaving early (the client went away) gives back what was not done
    assert batcher.outstanding == 0


async def test_a_streamed_answers_parts_follow_its_renewed_deadline(make_batcher):
    """Each part of a streamed answer that leaves gives its caller (who reads as it comes) a new read timeout:
    a part queued before that is held to the new deadline, not the first one."""
    from services.core.runtime import timing

    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=60)
    running = asyncio.create_task(batcher.submit("x"))
    await wait_until(rec.started.is_set)
    streamed = timing.RequestTiming(deadline=time.monotonic() + 0.5, span=0.5)
    token = request_state.TIMING.set(streamed)
    try:
        part = asyncio.create_task(batcher.submit("p", wait_for_space=True))
    finally:
        request_state.TIMING.reset(token)
    for _ in range(4):  # 0.8 s: past the first deadline, never past a renewed one
        await asyncio.sleep(0.2)
        streamed.renew()
    assert not part.done()
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(running, part), timeout=10) == ["xx", "pp"]


async def test_a_queued_item_that_can_no_longer_finish_in_time_is_refused_not_computed(make_batcher):
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=60)
    running = asyncio.create_task(batcher.submit("x"))
    await wait_until(rec.started.is_set)
    from services.core.runtime import timing

    token = request_state.TIMING.set(timing.RequestTiming(deadline=time.monotonic() + 2))  # the client's deadline binds
    try:
        late = asyncio.create_task(batcher.submit("p", wait_for_space=True))
    finally:
        request_state.TIMING.reset(token)
    on_time = asyncio.create_task(batcher.submit("q", wait_for_space=True))  # the model's 60 s
    await wait_until(lambda: batcher.depth == 2)
    batcher.admission.recent_elapsed_s = 5.0  # batches take 5 s lately: "p" cannot be done in 2
    gate.set()
    with pytest.raises(QueueFull) as refused:
        await asyncio.wait_for(late, timeout=10)
    assert refused.value.code == "deadline_unreachable" and int(refused.value.headers["Retry-After"]) >= 1
    assert await asyncio.wait_for(asyncio.gather(running, on_time), timeout=10) == ["xx", "qq"]
    assert rec.seen == ["x", "q"] and batcher.stats.shed == 1


async def test_batch_priority_work_runs_after_interactive_work_and_never_delays_its_admission(make_batcher):
    """A request marked ``X-Harmony-Priority: batch`` queues behind interactive work, and the batch work
    admitted does not count against an interactive request's deadline."""
    from services.core.runtime import timing

    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=600)
    running = asyncio.create_task(batcher.submit("x"))
    await wait_until(rec.started.is_set)
    token = request_state.TIMING.set(timing.RequestTiming(priority=timing.PRIORITIES["batch"]))
    try:
        bulk = batcher.reserve(50)  # fifty seconds of batch work, at the 1 s a unit guessed
        bulk_parts = [asyncio.create_task(bulk.submit(f"b{i}")) for i in range(3)]
    finally:
        request_state.TIMING.reset(token)
    await wait_until(lambda: batcher.depth == 3)
    hurried = request_state.TIMING.set(timing.RequestTiming(deadline=time.monotonic() + 10))
    try:
        with batcher.reserve(1) as interactive:  # 1 unit running + 1 of its own fits in 5 s; the 50 do not count
            part = asyncio.create_task(interactive.submit("i"))
            await wait_until(lambda: batcher.depth == 4)
            gate.set()
            await asyncio.wait_for(asyncio.gather(running, part, *bulk_parts), timeout=10)
    finally:
        request_state.TIMING.reset(hurried)
    bulk.release()
    assert rec.seen == ["x", "i", "b0", "b1", "b2"] and batcher.outstanding == 0


def test_the_priority_header_names_a_known_priority_or_nothing():
    from services.core.runtime.timing import priority_of

    def scope(value: bytes) -> dict:
        return {"headers": [(b"x-harmony-priority", value)]}

    assert priority_of(scope(b"batch")) == "batch" and priority_of(scope(b" Batch ")) == "batch"
    assert priority_of(scope(b"urgent")) is None and priority_of({"headers": []}) is None


async def test_an_item_whose_batch_is_computing_gets_its_result_though_its_deadline_passes(make_batcher):
    """Once its batch runs, the work is spent and the answer moments away: it is awaited, not turned into a 504
    (a client that left cancels it anyway)."""
    from services.core.runtime import timing

    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = make_batcher(rec, gate=gate, max_batch_size=1, max_queue_delay_ms=0, timeout_s=60)
    token = request_state.TIMING.set(timing.RequestTiming(deadline=time.monotonic() + 0.3))
    try:
        task = asyncio.create_task(batcher.submit("a"))
    finally:
        request_state.TIMING.reset(token)
    await wait_until(rec.started.is_set)
    await asyncio.sleep(0.5)  # past its deadline, still computing
    assert not task.done()
    gate.set()
    assert await asyncio.wait_for(task, timeout=10) == "aa"


async def test_batch_priority_work_waits_for_interactive_work_on_any_model_to_be_quiet(make_batcher):
    """The models of a process share its cores: batch work starts only once no interactive item is in flight in
    any batcher, and none ended in the last QUIET_S."""
    from services.core.runtime import timing
    from services.core.runtime.interactive import INTERACTIVE, QUIET_S

    gate = threading.Event()
    interactive_rec = Recorder(gate=gate)
    other_model = make_batcher(interactive_rec, gate=gate, name="interactive-model", max_queue_delay_ms=0)
    bulk_rec = Recorder()
    bulk_model = make_batcher(bulk_rec, name="bulk-model", max_queue_delay_ms=0)
    running = asyncio.create_task(other_model.submit("i"))
    await wait_until(interactive_rec.started.is_set)
    token = request_state.TIMING.set(timing.RequestTiming(priority=timing.PRIORITIES["batch"]))
    try:
        bulk = asyncio.create_task(bulk_model.submit("b"))
    finally:
        request_state.TIMING.reset(token)
    await asyncio.sleep(3 * QUIET_S)
    assert bulk_rec.batches == []  # the interactive item is still computing on the other model
    gate.set()
    assert await asyncio.wait_for(running, timeout=10) == "ii"
    assert await asyncio.wait_for(bulk, timeout=10) == "bb"
    assert bulk_rec.times[0] >= INTERACTIVE.last_end + QUIET_S * 0.99  # it started only after the quiet


async def test_batch_priority_work_runs_in_small_batches(make_batcher):
    """A batch is never interrupted, so batch-priority batches are kept small (half of max_batch_size by
    default): that bounds an interactive request's wait behind one."""
    from services.core.runtime import timing

    rec = Recorder()
    batcher = make_batcher(rec, max_batch_size=8, max_queue_delay_ms=50, instances=1)
    token = request_state.TIMING.set(timing.RequestTiming(priority=timing.PRIORITIES["batch"]))
    try:
        bulk = [asyncio.create_task(batcher.submit(i, wait_for_space=True)) for i in range(6)]
    finally:
        request_state.TIMING.reset(token)
    assert await asyncio.wait_for(asyncio.gather(*bulk), timeout=10) == [0, 2, 4, 6, 8, 10]
    assert [len(b) for b in rec.batches] == [4, 2]  # 8 // 2
