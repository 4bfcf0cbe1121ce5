"""A replica that failed sits out alone, and comes back when its ``/readyz`` answers again.

Ejection is per replica (in Kubernetes, per pod): the model's other replicas go on serving. The ejected
replica is probed, first after ``first_probe_s`` and then less often (doubling up to ``max_probe_s``),
until its service says the model is ready; a replica that leaves the model table meanwhile (its pod left
the EndpointSlice) is no longer probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from services.core.runtime.metrics import Metrics
from services.router.routing import ModelTable, Replica

log = logging.getLogger("harmony.router.ejection")

Probe = Callable[[str, str], Awaitable[bool]]  # replica URL, model name -> the model is ready there

FIRST_PROBE_S = 0.25
MAX_PROBE_S = 2.0


class Ejections:
    def __init__(self, table: ModelTable, probe: Probe, first_probe_s: float = FIRST_PROBE_S,
                 max_probe_s: float = MAX_PROBE_S, metrics: Metrics | None = None) -> None:
        self.table = table
        self.metrics = metrics
        self.probe = probe
        self.first_probe_s = first_probe_s
        self.max_probe_s = max_probe_s
        self._probes: set[asyncio.Task] = set()

    def eject(self, model: str, replica: Replica, reason: str) -> None:
        """Take ``replica`` of ``model`` out of balancing until a probe finds it ready (once per ejection)."""
        if replica.ejected:
            return
        replica.ejected = True
        self._count(model, 1)
        log.warning("replica %s of model %s ejected (%s); probing its /readyz", replica.url, model, reason)
        task = asyncio.get_running_loop().create_task(self._probe_until_back(model, replica),
                                                      name=f"probe-{replica.url}")
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _listed(self, model: str, replica: Replica) -> bool:
        served = self.table.models.get(model)
        return served is not None and any(r is replica for r in served.replicas)

    def _count(self, model: str, change: int) -> None:
        if self.metrics:
            if change > 0:
                self.metrics.ejections.labels(model).inc()
            self.metrics.ejected.labels(model).inc(change)

    async def _probe_until_back(self, model: str, replica: Replica) -> None:
        try:
            await self._wait_ready(model, replica)
        finally:
            replica.ejected = False  # back, gone from the table, or the router stops
            self._count(model, -1)

    async def _wait_ready(self, model: str, replica: Replica) -> None:
        delay = self.first_probe_s
        while True:
            await asyncio.sleep(delay)
            if not self._listed(model, replica):
                return  # gone from the table: nothing balances over it any more
            if await self.probe(replica.url, model):
                log.info("replica %s of model %s is ready again", replica.url, model)
                return
            delay = min(delay * 2, self.max_probe_s)

    async def aclose(self) -> None:
        for task in list(self._probes):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
