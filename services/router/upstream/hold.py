"""Scale from zero: a request for a model with no ready replica waits (bounded) while one starts.

The request is held in the router, the operator is asked for a replica (:mod:`services.router.cluster.wake`),
and the request goes on as soon as the model table has a ready replica (``ModelTable.wait_ready``,
fed by whatever learns readiness). It waits at most the model's ``autoscaling.hold_timeout_s``,
and never past the deadline its client announced; then it is answered 503 with ``Retry-After``: what is left of
the model's last measured cold start (the first hold to the first ready replica), else ``RETRY_AFTER_COLD_S``.
While a request is held, the waker keeps renewing the model's demand (so the operator never puts it back to zero
while someone waits). Held requests count against the model's admission limit, so a burst at a cold model is bounded.
"""

from __future__ import annotations

import math
import time

from services.core.contracts.errors import ServiceUnavailable
from services.core.contracts.specs import AutoscalingSpec
from services.core.runtime.metrics import Metrics
from services.router.cluster.wake import NoWaker, Waker
from services.router.routing import ModelTable, ServedModel
from services.router.upstream.admission import client_remaining_s

RETRY_AFTER_COLD_S = 10  # a model still starting after the hold, no cold start measured yet: retry in this many s


def hold_timeout_s(model: ServedModel) -> float:
    return (model.spec.autoscaling or AutoscalingSpec()).hold_timeout_s


class ColdStarts:
    def __init__(self, table: ModelTable, waker: Waker | None = None, metrics: Metrics | None = None) -> None:
        self.table = table
        self.waker = waker or NoWaker()
        self.metrics = metrics
        self.waking_since: dict[str, float] = {}  # model -> when its first held request came (monotonic)
        self.cold_start_s: dict[str, float] = {}  # model -> its last measured cold start (first hold -> ready)

    def retry_after_s(self, name: str, now: float | None = None) -> int:
        """``Retry-After`` for a model still starting: the rest of its last measured cold start."""
        measured, since = self.cold_start_s.get(name), self.waking_since.get(name)
        if measured is None or since is None:
            return RETRY_AFTER_COLD_S
        waited = (time.monotonic() if now is None else now) - since
        return max(1, math.ceil(measured - waited))

    def _measure(self, name: str) -> None:
        since = self.waking_since.pop(name, None)
        if since is not None:
            self.cold_start_s[name] = time.monotonic() - since

    def _held(self, model: ServedModel, change: int) -> None:
        model.held += change
        self.waker.holding(model.name, change)
        if self.metrics:
            self.metrics.held.labels(model.name).inc(change)

    async def ready(self, model: ServedModel) -> ServedModel:
        """``model`` as the table has it once it has a replica (at once, when it has one now)."""
        autoscaling = model.spec.autoscaling
        if autoscaling is not None and autoscaling.scales_to_zero:
            self.waker.touch(model.name)
        if model.replicas:
            return model
        self.waking_since.setdefault(model.name, time.monotonic())
        timeout = hold_timeout_s(model)
        remaining = client_remaining_s()
        if remaining is not None:
            timeout = min(timeout, remaining)
        self.waker.wake(model.name)
        self._held(model, +1)
        try:
            await self.table.wait_ready(model.name, timeout)
        finally:
            self._held(model, -1)
        current = self.table.models.get(model.name)
        if current is None or not current.replicas:
            raise ServiceUnavailable(
                f"model '{model.name}' has no ready replica yet (it is starting from zero); retry later",
                code="model_starting", headers={"Retry-After": str(self.retry_after_s(model.name))})
        self._measure(model.name)
        return current
