"""A model's admission: the work it has admitted and not yet done, how fast it has been doing work lately, and the
check that refuses a newcomer (429 ``deadline_unreachable``) that could not finish before its deadline behind it.

Work is counted in units (a window of a transcription, a second of speech) by priority: a newcomer waits only
behind work of its own priority or a higher one (a lower value). A request of many parts holds a ``Reservation``
for all of them from the moment it is admitted, so work admitted but not queued yet counts ahead of newcomers too.
The pace is learned from the batches the model ran (``learn``): the recent average seconds per unit, or the slower
batches of late where they were slower (the machine is shared, and contention comes in bursts).

The batcher (:mod:`services.core.runtime.batching`) owns the queue and the loop; it asks ``check`` before it queues
a new request, tells ``admitted``/``done``/``answered`` as work comes and goes, and ``learn`` after each batch.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from services.core.contracts.errors import QueueFull, RequestTimeout
from services.core.runtime.metrics import Metrics

if TYPE_CHECKING:
    from services.core.runtime.batching import DynamicBatcher

FINISH_WITHIN = 0.5  # the admitted work ahead plus a newcomer's own must fit in this share of its time left
RECENT_RATES = 10  # the latest batches' seconds per unit of work, for a cautious estimate of the next ones
RANK_HOLD_S = 1.0  # an item's rank holds it back for at most this long (unless its caller says); then its deadline


def retry_after_s(excess_s: float) -> int:
    """Whole seconds (at least 1) for ``Retry-After`` when ``excess_s`` of work must drain first."""
    return max(1, math.ceil(excess_s))


class BatchAdmission:
    """The admitted work and the learned pace of one model (one batcher), and the deadline check."""

    def __init__(self, name: str, instances: int = 1, metrics: Metrics | None = None) -> None:
        self.name = name
        self.instances = instances  # batches computed at once: the pace is per instance
        self.metrics = metrics
        self.recent_unit_s = 1.0  # seconds of this model's time one unit of work took lately (throughput)
        self.recent_batch_s = 1.0  # seconds of this model's time one batch took lately (for Retry-After)
        self.recent_elapsed_s = 0.0  # how long one batch took lately, from start to end
        self._unit_times: deque[float] = deque(maxlen=RECENT_RATES)
        self._outstanding: dict[int, float] = {}  # by priority, units admitted and not done: reserved parts, and
        # single items queued or running
        self.requests_in_flight = 0  # requests admitted and not yet answered (a reservation, or a single item)
        self._set_in_flight()  # the series exists from the start: an autoscaler reads 0, not "no data"

    # the pace
    def learn(self, elapsed_s: float, units: float) -> None:
        """A batch of ``units`` of work took ``elapsed_s`` from start to end."""
        units = units or 1.0
        self.recent_batch_s = 0.8 * self.recent_batch_s + 0.2 * elapsed_s / self.instances
        self.recent_unit_s = 0.8 * self.recent_unit_s + 0.2 * elapsed_s / units / self.instances
        self._unit_times.append(elapsed_s / units / self.instances)
        self.recent_elapsed_s = 0.8 * self.recent_elapsed_s + 0.2 * elapsed_s

    @property
    def unit_s(self) -> float:
        """Seconds one unit of work takes, cautiously: the recent average, or the slower batches of late (the
        machine is shared: other models' batches slow this one's down in bursts)."""
        if not self._unit_times:
            return self.recent_unit_s
        recent = sorted(self._unit_times)
        return max(self.recent_unit_s, recent[int(0.8 * (len(recent) - 1))])

    def finishes_in_time(self, due: float, now: float) -> bool:
        """Whether work due at ``due`` could still finish if its batch started at ``now``."""
        return due >= now + self.recent_elapsed_s

    # the admitted work
    @property
    def outstanding(self) -> float:
        """Units of work admitted and not yet done."""
        return sum(self._outstanding.values())

    def backlog_s(self) -> float:
        """Seconds the work admitted and not yet done takes, at the learned pace."""
        return self.outstanding * self.unit_s

    def ahead(self, priority: int) -> float:
        """Units admitted and not done that go before work of ``priority``."""
        return sum(units for p, units in self._outstanding.items() if p <= priority)

    def admitted(self, priority: int, units: float) -> None:
        """A request admitted: its ``units`` count ahead of newcomers, and it is in flight until ``answered``."""
        self._count(priority, units)
        self.requests_in_flight += 1
        self._set_in_flight()

    def done(self, priority: int, units: float) -> None:
        """``units`` of admitted work done, failed or given up: no longer ahead of anyone."""
        self._count(priority, -units)

    def answered(self) -> None:
        """A request admitted earlier was answered (or gave up)."""
        self.requests_in_flight -= 1
        self._set_in_flight()

    def check(self, deadline: float, units: float, priority: int) -> None:
        """A new request is refused (429) when the work admitted before it plus its own would take more than
        FINISH_WITHIN of the time left to its deadline, at the rate units of work have been done lately (the rest is
        margin for contention that has not shown yet); RequestTimeout when its deadline has passed already."""
        if deadline <= time.monotonic():
            raise RequestTimeout(f"request to {self.name} reached its deadline before it was queued")
        ahead = self.ahead(priority)
        if ahead <= 0:
            return  # an idle model takes any request (and so keeps learning how long its work takes)
        ahead_s = ahead * self.unit_s
        need_s = ahead_s + units * self.unit_s
        allowed_s = (deadline - time.monotonic()) * FINISH_WITHIN
        if need_s > allowed_s:
            raise QueueFull(f"model {self.name} cannot finish this request before its deadline (about {ahead_s:.0f} s "
                            "of admitted work ahead); retry later",
                            headers={"Retry-After": str(retry_after_s(need_s - allowed_s))},
                            code="deadline_unreachable")

    def _count(self, priority: int, units: float) -> None:
        self._outstanding[priority] = self._outstanding.get(priority, 0.0) + units

    def _set_in_flight(self) -> None:
        """The gauge the autoscalers read."""
        if self.metrics:
            self.metrics.in_flight.labels(self.name).set(self.requests_in_flight)


class Reservation:
    """The work a request announced when it was admitted: counted ahead of newcomers until done or released.

    Use as a context manager; its parts go through ``submit`` (never refused for lack of room: they wait for it,
    up to the request's deadline). Leaving the block releases what was not done (the request ended early)."""

    def __init__(self, batcher: DynamicBatcher[Any, Any], admission: BatchAdmission, units: float, deadline: float,
                 priority: int) -> None:
        self.batcher = batcher
        self.admission = admission
        self.remaining = units
        self.deadline = deadline
        self.priority = priority
        self._open = True
        admission.admitted(priority, units)

    async def submit(self, item: Any, *, units: float = 1.0, rank: int = 0, rank_hold_s: float = RANK_HOLD_S) -> Any:
        return await self.batcher.submit(item, deadline=self.deadline, wait_for_space=True, priority=self.priority,
                                         units=units, reservation=self, rank=rank, rank_hold_s=rank_hold_s)

    def consume(self, units: float) -> None:
        done = min(units, self.remaining)
        self.remaining -= done
        self.admission.done(self.priority, done)

    def release(self) -> None:
        self.consume(self.remaining)
        if self._open:
            self._open = False
            self.admission.answered()

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
