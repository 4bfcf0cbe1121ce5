"""A generic dynamic batcher (one per loaded model), after Triton's.

Items wait in a bounded queue. A batch closes at ``max_batch_size`` items or
``max_queue_delay_ms`` after its first item arrived, whichever comes first, and
runs in a worker thread, never on the event loop. Every item carries a deadline;
items whose caller went away (cancelled future) or whose deadline passed are
dropped before computing. A full queue refuses new work with ``QueueFull`` (429).

Admission reserves a request's whole work: a request of many parts (the windows of a
transcription, the sentences of a speech) announces them with ``reserve`` and is admitted only
when everything already admitted plus all of its own parts can be done before its deadline, at
the rate batches have run lately (``services/core/runtime/batch_admission.py`` keeps that count and that pace;
the batcher keeps the queue, the order and the loop). Waiting items run by priority class, then by rank (a part's
place in its request, where the caller gives one: a speech's first sentence has rank 0, its second
1, the rest 2, so every request's first audio starts before anyone's third sentence; for as long as the
caller says, a sentence for the audio before it, so a later sentence is never starved by a stream of
newcomers), then earliest
deadline first: the later parts of an admitted request go before the parts of requests admitted
after it, so admitted work finishes instead of being overtaken by newcomers until its deadline passes.
A queued item that could no longer finish before its deadline even if it started now (the
estimate was wrong: contention came in a burst) is refused then (429), never computed late.

A batch already computing cannot be interrupted, but a backend whose ``run_batch`` takes a ``wanted`` keyword is
told which of its items are still awaited (``services/core/tasks/wanted.py``) and drops the others between its steps.
``stop`` lets the work still awaited finish, up to a grace; then it fails what is queued, gives up the running
items (their backends drop them at their next step) and returns without waiting for the worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

from services.core.contracts.errors import InferenceError, QueueFull, RequestTimeout, ServiceUnavailable
from services.core.contracts.specs import BatchingSpec
from services.core.runtime import timing, tracing
from services.core.runtime.batch_admission import RANK_HOLD_S, BatchAdmission, Reservation, retry_after_s
from services.core.runtime.interactive import INTERACTIVE, InteractiveActivity
from services.core.runtime.metrics import Metrics
from services.core.tasks.wanted import Abandoned, BatchWanted, takes_wanted

log = logging.getLogger("harmony.batching")

RECENT_BATCHES = 1000  # batch sizes kept for inspection; the metrics histogram has the full record

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(eq=False)  # each one is itself (hashable by identity)
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future
    enqueued: float
    deadline: float
    priority: int = 0
    seq: int = 0             # arrival order: first in, first out among equal deadlines
    rank: int = 0            # within a priority, lower ranks go first (a speech's first sentences)...
    rank_until: float = 0.0  # ...until then; after it, it goes by its deadline
    units: float = 1.0       # its share of work (a window, seconds of speech), for the admission estimate
    caller: timing.RequestTiming | None = None  # the request's own deadline, which a streamed answer renews
    started: bool = False    # its batch is computing: its result is awaited (up to its own deadline), never dropped
    queue_s: float = 0.0     # set when its batch starts: how long it waited
    compute_s: float = 0.0   # set when its batch ends: how long the batch took
    trace: Any = None        # its request's trace context, when traced (services/core/runtime/tracing.py)

    def due(self) -> float:
        """When it must be done: the earlier of its own deadline and its caller's (which may move later)."""
        caller = self.caller.deadline if self.caller is not None else None
        return self.deadline if caller is None else min(self.deadline, caller)

    def wait_limit(self) -> float:
        """How long its submitter waits: while queued, until it is due; once its batch computes, the work is
        spent and the answer moments away, so until its own deadline (the model's timeout: a hung backend)."""
        return self.deadline if self.started else self.due()


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_BATCHES))  # the latest batches only
    dropped_cancelled: int = 0
    dropped_expired: int = 0
    shed: int = 0  # refused (429) while still queued: it could no longer finish before its deadline
    abandoned: int = 0  # dropped by the backend inside a running batch: nobody waited for it any more


class DynamicBatcher(Generic[In, Out]):
    """Batches items for ``run_batch`` (a blocking callable: list of items -> list of results or exceptions)."""

    def __init__(self, name: str, run_batch: Callable[[Sequence[In]], Sequence[Out | BaseException]],
                 spec: BatchingSpec, metrics: Metrics | None = None, executor: ThreadPoolExecutor | None = None,
                 activity: InteractiveActivity = INTERACTIVE) -> None:
        """``activity``: the interactive work of the batchers sharing this one's cores (by default the process's)."""
        self.name = name
        self.run_batch = run_batch
        self._takes_wanted = takes_wanted(run_batch)  # told which items are still awaited, between its steps
        self.spec = spec
        self.metrics = metrics
        self.stats = BatchStats()
        self._queue: list[_Pending[In, Out]] = []
        self._wakeup = asyncio.Event()
        self._space = asyncio.Condition()
        self._executor = executor or ThreadPoolExecutor(max_workers=spec.instances, thread_name_prefix=f"batch-{name}")
        self._own_executor = executor is None
        self._task: asyncio.Task | None = None
        self._closing = False
        self.admission = BatchAdmission(name, spec.instances, metrics)  # the work admitted, and the pace
        self._seq = 0
        self._interactive_running = 0  # interactive batches computing
        self._running_items = 0  # items computing, any priority
        self._computing: set[_Pending[In, Out]] = set()  # ...and which: given up when stop's grace ends
        self._activity = activity
        activity.join(self)

    # lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self, grace_s: float | None = None) -> None:
        """Refuse new items and let the queue run empty (items nobody awaits any more are dropped); with
        ``grace_s``, after that long fail the items still queued (503 ``shutting_down``), give up the running ones
        (a backend that takes ``wanted`` drops them at its next step) and return without waiting for the worker
        threads."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=grace_s)
            except TimeoutError:
                self._abort()
                await asyncio.wait({self._task}, timeout=grace_s)
            if self._task.done():
                self._task = None
        if self._own_executor:
            self._executor.shutdown(wait=self._task is None, cancel_futures=True)

    def _abort(self) -> None:
        """Shutting down past the grace: every item still queued fails, every item computing is given up."""
        log.warning("%s: shutting down with %d items queued and %d computing; giving them up", self.name,
                    len(self._live()), self._running_items)
        for p in [*self._queue, *self._computing]:
            if not p.future.done():
                p.future.set_exception(ServiceUnavailable(f"model {self.name} is shutting down",
                                                          code="shutting_down", headers={"Retry-After": "1"}))
        self._wakeup.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def outstanding(self) -> float:
        """Units of work admitted and not yet done."""
        return self.admission.outstanding

    def retry_after_s(self) -> int:
        """Seconds until the work queued and admitted has drained enough for a new request."""
        return retry_after_s(max(math.ceil(self.depth / self.spec.max_batch_size) * self.admission.recent_batch_s,
                                 self.admission.backlog_s()))

    def reserve(self, units: float, *, deadline: float | None = None, priority: int = 0) -> Reservation:
        """Admit a request of ``units`` of work (raises QueueFull (429) when it cannot finish before its
        deadline behind the work already admitted) and hold its place until its parts are done."""
        if self._closing:
            raise ServiceUnavailable(f"model {self.name} is shutting down")
        deadline = self._own_deadline(deadline)
        priority = priority or timing.priority()  # the request's own, unless the caller said
        self._admit(self._due(deadline), units, priority)
        return Reservation(self, self.admission, units, deadline, priority)

    # submission
    async def submit(self, item: In, *, deadline: float | None = None, wait_for_space: bool = False,
                     priority: int = 0, units: float = 1.0, reservation: Reservation | None = None,
                     rank: int = 0, rank_hold_s: float = RANK_HOLD_S) -> Out:
        """Queue one item and wait for its result.

        ``wait_for_space=False`` (a new request of one item) is admitted first: QueueFull (429) when the queue
        is full or the work ahead would keep it past its deadline; ``True`` (a part of a request already
        admitted; see ``reserve``) waits for room instead. Lower ``priority`` values go first; within a
        priority, lower ``rank`` values (for ``rank_hold_s`` after it is queued), then the earliest deadline, then
        first in, first out. Cancelling the awaiting task drops the item.
        """
        if self._closing:
            raise ServiceUnavailable(f"model {self.name} is shutting down")
        if self._task is None:
            self.start()
        deadline = self._own_deadline(deadline)
        priority = priority or timing.priority()  # the request's own, unless the caller said
        if not wait_for_space:
            self._admit(self._due(deadline), units, priority)
        if reservation is None:
            self.admission.admitted(priority, units)
        try:
            return await self._queued(item, deadline, priority, units, rank, rank_hold_s)
        finally:
            if reservation is None:
                self.admission.done(priority, units)
                self.admission.answered()
            else:
                reservation.consume(units)

    async def _queued(self, item: In, deadline: float, priority: int, units: float, rank: int = 0,
                      rank_hold_s: float = RANK_HOLD_S) -> Out:
        pending: _Pending[In, Out] = _Pending(item, asyncio.get_running_loop().create_future(), 0.0, deadline,
                                              priority, units=units, caller=timing.current(), rank=rank,
                                              trace=tracing.capture())
        if self._queue_full():
            async with self._space:
                try:
                    await asyncio.wait_for(self._space.wait_for(lambda: not self._queue_full()),
                                           timeout=max(0.0, pending.due() - time.monotonic()))
                except TimeoutError:
                    raise RequestTimeout(f"request to {self.name} timed out waiting for queue space") from None
        self._seq += 1
        pending.seq, pending.enqueued = self._seq, time.monotonic()
        pending.rank_until = pending.enqueued + rank_hold_s
        self._queue.append(pending)
        self._set_depth()
        self._wakeup.set()
        try:
            while not pending.future.done():  # the deadline may move later while it waits (a streamed answer)
                await asyncio.wait([pending.future], timeout=max(0.0, pending.wait_limit() - time.monotonic()))
                if not pending.future.done() and pending.wait_limit() <= time.monotonic():
                    raise RequestTimeout(f"request to {self.name} did not finish before its deadline")
            result = pending.future.result()
            timing.record(pending.queue_s, pending.compute_s)
            return result
        except BaseException:
            pending.future.cancel()  # the caller went away or gave up: the loop drops it before computing
            raise

    def _own_deadline(self, given: float | None) -> float:
        """``given``, or the model's timeout from now."""
        return given if given is not None else time.monotonic() + self.spec.timeout_s

    @staticmethod
    def _due(deadline: float) -> float:
        """The earlier of ``deadline`` and the current request's own deadline, as its caller gave it."""
        caller = timing.deadline()
        return min(deadline, caller) if caller is not None else deadline

    def _admit(self, deadline: float, units: float, priority: int) -> None:
        """A new request is refused (429) when the queue is full, or when the admission says it cannot finish before
        its deadline behind the work admitted before it."""
        if self._queue_full():
            raise QueueFull(f"model {self.name} is at capacity ({self.spec.max_queue_size} queued); retry later",
                            headers={"Retry-After": str(self.retry_after_s())})
        self.admission.check(deadline, units, priority)

    # the batching loop
    async def _loop(self) -> None:
        """Form batches and run up to ``spec.instances`` of them at once (Triton's instance count)."""
        slots = asyncio.Semaphore(self.spec.instances)
        running: set[asyncio.Task] = set()
        while True:
            await slots.acquire()
            batch = await self._next_batch(lambda: self.spec.instances - len(running))
            if batch is None:
                slots.release()
                break
            task = asyncio.get_running_loop().create_task(self._run(batch))
            running.add(task)

            def finished(t: asyncio.Task) -> None:
                running.discard(t)
                slots.release()

            task.add_done_callback(finished)
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    async def _next_batch(self, free_instances: Callable[[], int]) -> list[_Pending[In, Out]] | None:
        """Wait for a batch: full, or ``max_queue_delay_ms`` after its oldest item; None once closed and empty.

        With several idle instances the waiting items are shared out between them rather
        than piled into one batch while the other instances sit idle.
        """
        while True:
            if not self._queue:
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            oldest = self._queue[0].enqueued
            close_at = oldest + self.spec.max_queue_delay_ms / 1000.0
            while len(self._live()) < self.spec.max_batch_size and not self._closing:
                remaining = close_at - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
                except TimeoutError:
                    break
            if await self._hold_batch_work():
                continue
            live = self._live()
            share = max(1, free_instances())
            batch = self._take_batch(max(1, math.ceil(len(live) / share)))
            await self._notify_space()
            if batch:
                self._interactive_running += batch[0].priority <= 0  # counted from now, not from when it starts
                self._running_items += len(batch)
                return batch

    async def _hold_batch_work(self) -> bool:
        """True (after a wait) when only batch-priority items wait and interactive work is not quiet yet."""
        live = self._live()
        if self._closing or not live or any(p.priority <= 0 for p in live):
            return False
        delay = self._activity.quiet_in()
        if delay <= 0:
            return False
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
        except TimeoutError:
            pass
        return True

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        background = batch[0].priority > 0  # counted as running since _next_batch took it
        try:
            await self._compute(batch)
        finally:
            self._interactive_running -= not background
            self._running_items -= len(batch)
            if background:
                self._wakeup.set()  # the next batch of it may start
            else:
                self._activity.ended()

    def _queue_full(self) -> bool:
        """The model holds ``max_queue_size + max_batch_size x instances`` items, queued or computing (what the
        router counts per replica): a burst that arrives before the first batch closes fits, and so does one
        that arrives while smaller batches compute."""
        capacity = self.spec.max_queue_size + self.spec.max_batch_size * self.spec.instances
        return len(self._queue) + self._running_items >= capacity

    def interactive_in_flight(self) -> bool:
        """Interactive items queued or computing here (a batcher whose loop is not running holds none)."""
        if self._task is None or self._task.done():
            return False
        return self._interactive_running > 0 or any(p.priority <= 0 and not p.future.done() for p in self._queue)

    async def _compute(self, batch: list[_Pending[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for p in batch:
            p.started = True
            p.queue_s = started - p.enqueued
            if self.metrics:
                self.metrics.queue_wait.labels(self.name).observe(p.queue_s)
        items = [p.item for p in batch]
        run: Callable[..., Sequence[Out | BaseException]] = self.run_batch  # with ``wanted`` when it takes it
        call = partial(run, items, wanted=BatchWanted([p.future for p in batch])) if self._takes_wanted \
            else partial(run, items)
        self._computing.update(batch)
        try:
            results = await loop.run_in_executor(self._executor, call)
            if len(results) != len(batch):
                raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:  # the loop closes on a batch that ``stop`` gave up: its waiters were told
            raise
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            log.exception("batch of %d for %s failed", len(batch), self.name)
            results = [exc] * len(batch)
        finally:
            self._computing.difference_update(batch)
        abandoned = sum(isinstance(result, Abandoned) for result in results)
        if abandoned:
            self.stats.abandoned += abandoned
            if self.metrics:
                self.metrics.abandoned_items.labels(self.name).inc(abandoned)
        elapsed = time.monotonic() - started
        for p in batch:
            p.compute_s = elapsed
        self.admission.learn(elapsed, sum(p.units for p in batch))
        if tracing.enabled():
            tracing.record_batch(self.name, [(p.trace, p.enqueued) for p in batch], started, started + elapsed)
        self.stats.batches += 1
        self.stats.items += len(batch)
        self.stats.sizes.append(len(batch))
        if self.metrics:
            self.metrics.batch_size.labels(self.name).observe(len(batch))
            self.metrics.inference_time.labels(self.name).observe(elapsed)
        for p, result in zip(batch, results):
            if p.future.done():
                continue
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    result = InferenceError(f"{self.name}: {type(result).__name__}")
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

    def _live(self) -> list[_Pending[In, Out]]:
        return [p for p in self._queue if not p.future.cancelled()]

    def _take_batch(self, limit: int | None = None) -> list[_Pending[In, Out]]:
        now = time.monotonic()
        live: list[_Pending[In, Out]] = []
        for p in self._queue:
            if p.future.cancelled() or p.future.done():
                self.stats.dropped_cancelled += 1
            elif p.due() <= now:
                self.stats.dropped_expired += 1
                p.future.set_exception(RequestTimeout(f"request to {self.name} expired in the queue"))
            elif not self.admission.finishes_in_time(p.due(), now) and p.due() < p.deadline:  # the caller's binds
                self.stats.shed += 1  # computing it would only make it late: refuse it now, and save the work
                p.future.set_exception(QueueFull(
                    f"model {self.name} is overloaded: this request can no longer finish before its deadline; "
                    "retry later", headers={"Retry-After": str(self.retry_after_s())}, code="deadline_unreachable"))
            else:
                live.append(p)
        ordered = sorted(live, key=lambda p: (p.priority, p.rank if now < p.rank_until else 0, p.due(), p.seq))
        ordered = [p for p in ordered if p.priority == ordered[0].priority] if ordered else ordered  # one priority
        # a batch: batch-priority items never ride along with interactive ones (they would make that batch longer)
        size = self.spec.max_batch_size if not ordered or ordered[0].priority <= 0 else self.spec.background_size()
        batch = ordered[: min(size, limit or size)]
        taken = {id(p) for p in batch}
        self._queue = [p for p in live if id(p) not in taken]
        self._set_depth()
        return batch

    async def _notify_space(self) -> None:
        async with self._space:
            self._space.notify_all()

    def _set_depth(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.name).set(len(self._queue))
