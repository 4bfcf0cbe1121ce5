"""A generic dynamic batcher (one per loaded model), after Triton's.

Items wait in a bounded queue. A batch closes at ``max_batch_size`` items or
``max_queue_delay_ms`` after its first item arrived, whichever comes first, and
runs in a worker thread, never on the event loop. Every item carries a deadline;
items whose caller went away (cancelled future) or whose deadline passed are
dropped before computing. A full queue refuses new work with ``QueueFull`` (429).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from services.core import timing
from services.core.errors import InferenceError, QueueFull, RequestTimeout, ServiceUnavailable
from services.core.metrics import Metrics
from services.core.specs import BatchingSpec

log = logging.getLogger("harmony.batching")

START_WITHIN = 0.5  # a new request's wait plus one batch of its own must fit in this share of its time left
RECENT_BATCHES = 1000  # batch sizes kept for inspection; the metrics histogram has the full record

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future
    enqueued: float
    deadline: float
    priority: int = 0
    queue_s: float = 0.0     # set when its batch starts: how long it waited
    compute_s: float = 0.0   # set when its batch ends: how long the batch took


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    sizes: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_BATCHES))  # the latest batches only
    dropped_cancelled: int = 0
    dropped_expired: int = 0


class DynamicBatcher(Generic[In, Out]):
    """Batches items for ``run_batch`` (a blocking callable: list of items -> list of results or exceptions)."""

    def __init__(self, name: str, run_batch: Callable[[Sequence[In]], Sequence[Out | BaseException]],
                 spec: BatchingSpec, metrics: Metrics | None = None, executor: ThreadPoolExecutor | None = None) -> None:
        self.name = name
        self.run_batch = run_batch
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
        self._recent_batch_seconds = 1.0
        self._recent_wait_s = 0.0  # how long items waited in the queue lately (measured, contention included)
        self._recent_elapsed_s = 0.0  # how long one batch took lately, from start to end

    # lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new items, let the queue run empty, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._own_executor:
            self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        return len(self._queue)

    def retry_after_s(self) -> int:
        batches_ahead = max(1, math.ceil(self.depth / self.spec.max_batch_size))
        return max(1, math.ceil(batches_ahead * self._recent_batch_seconds))

    # submission
    async def submit(self, item: In, *, deadline: float | None = None, wait_for_space: bool = False,
                     priority: int = 0) -> Out:
        """Queue one item and wait for its result.

        ``wait_for_space=False`` (a new request) raises QueueFull when the queue is full;
        ``True`` (the continuation of a request already admitted) waits for room instead.
        Lower ``priority`` values go first (first in, first out within a priority): a request's
        first sentence or window can overtake the later parts of requests already running.
        Cancelling the awaiting task drops the item from the queue.
        """
        if self._closing:
            raise ServiceUnavailable(f"model {self.name} is shutting down")
        if self._task is None:
            self.start()
        deadline = self._deadline(deadline)
        if not wait_for_space:
            self._admit(deadline)
        if len(self._queue) >= self.spec.max_queue_size:
            async with self._space:
                try:
                    await asyncio.wait_for(self._space.wait_for(lambda: len(self._queue) < self.spec.max_queue_size),
                                           timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    raise RequestTimeout(f"request to {self.name} timed out waiting for queue space") from None
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        pending = _Pending(item, future, time.monotonic(), deadline, priority)
        self._queue.append(pending)
        self._set_depth()
        self._wakeup.set()
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, deadline - time.monotonic()))
            timing.record(pending.queue_s, pending.compute_s)
            return result
        except TimeoutError:
            future.cancel()
            raise RequestTimeout(f"request to {self.name} did not finish before its deadline") from None
        except asyncio.CancelledError:
            future.cancel()  # the caller went away: the loop drops it before computing
            raise

    def _deadline(self, given: float | None) -> float:
        """The earliest of: ``given``, the model's timeout from now, and the caller's deadline for the request."""
        deadline = given if given is not None else time.monotonic() + self.spec.timeout_s
        caller = timing.deadline()
        return min(deadline, caller) if caller is not None else deadline

    def _admit(self, deadline: float) -> None:
        """A new request is refused (429) when the queue is full, or when its wait plus one batch of its own would
        take more than half the time left to its deadline (the rest is margin for its other parts and for
        contention that has not shown yet). The wait is judged by everything queued (a
        new request's later parts queue behind the later parts of requests already running), from how long batches
        take lately, and by how long items have actually waited lately while the queue is not empty."""
        if len(self._queue) >= self.spec.max_queue_size:
            raise QueueFull(f"model {self.name} is at capacity ({self.spec.max_queue_size} queued); retry later",
                            headers={"Retry-After": str(self.retry_after_s())})
        if deadline <= time.monotonic():
            raise RequestTimeout(f"request to {self.name} reached its deadline before it was queued")
        ahead = len(self._queue)
        if not ahead:
            return  # an idle model takes any request (and so keeps learning how long batches take)
        wait_s = max(math.ceil(ahead / self.spec.max_batch_size) * self._recent_batch_seconds, self._recent_wait_s)
        if wait_s + self._recent_elapsed_s > (deadline - time.monotonic()) * START_WITHIN:
            raise QueueFull(f"model {self.name} cannot start this request before its deadline (about {wait_s:.0f} s "
                            "of queued work ahead); retry later", headers={"Retry-After": str(self.retry_after_s())},
                            code="deadline_unreachable")

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
            share = max(1, free_instances())
            batch = self._take_batch(max(1, math.ceil(len(self._live()) / share)))
            await self._notify_space()
            if batch:
                return batch

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        for p in batch:
            p.queue_s = started - p.enqueued
            if self.metrics:
                self.metrics.queue_wait.labels(self.name).observe(p.queue_s)
        self._recent_wait_s = 0.8 * self._recent_wait_s + 0.2 * max(p.queue_s for p in batch)
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, [p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"backend returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            log.exception("batch of %d for %s failed", len(batch), self.name)
            results = [exc] * len(batch)
        elapsed = time.monotonic() - started
        for p in batch:
            p.compute_s = elapsed
        self._recent_batch_seconds = 0.8 * self._recent_batch_seconds + 0.2 * elapsed / self.spec.instances
        self._recent_elapsed_s = 0.8 * self._recent_elapsed_s + 0.2 * elapsed
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
            elif p.deadline <= now:
                self.stats.dropped_expired += 1
                p.future.set_exception(RequestTimeout(f"request to {self.name} expired in the queue"))
            else:
                live.append(p)
        ordered = sorted(live, key=lambda p: p.priority)  # stable: FIFO within a priority
        batch = ordered[: min(self.spec.max_batch_size, limit or self.spec.max_batch_size)]
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
