"""The model table: which public names exist, which service replicas serve them, and which replica to use.

Balancing is per replica (in Kubernetes: per pod, from the EndpointSlice watch, :mod:`services.router.cluster.pods`),
by each replica's load: the queue depth it last reported (every answer of a model service carries its requests in
flight, from every router, in ``x-harmony-queue-depth``; a report counts for ``REPORT_TTL_S``) plus this router's
own calls in flight there; a replica that refused a call (429, 503) counts as full for as long. Power of two
choices: of two replicas drawn at random (all of them when there are two), the less loaded, round-robin between
equals. A replica that failed is ejected alone until its ``/readyz`` answers again
(:mod:`services.router.upstream.ejection`).

Snapshots: OpenAI's clients may send a dated snapshot of a model name (``gpt-4o-mini-tts-2025-03-20``,
``tts-1-1106``). A name that is not served but is an *alias* followed by ``-YYYY-MM-DD`` or a
four-digit ``-MMDD`` suffix resolves as that alias. Model names themselves get no such rule, so a
typo in a real model's name stays a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from services.auth.guard import check_model
from services.core.contracts.errors import InvalidRequest, ModelNotFound, ServiceUnavailable
from services.core.contracts.specs import NamedModel, NamedRoute, Task

REPORT_TTL_S = 2.0  # a replica's reported queue depth counts this long (then it is asked again, like any other)
REFUSED_DEPTH = 1_000_000  # the depth a refusal (429, 503) reports: picked only when every other one refused too
SNAPSHOT = re.compile(r"^(?P<alias>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


@dataclass
class Replica:
    url: str
    in_flight: int = 0  # this router's calls to it under way
    ejected: bool = False  # failed: skipped until a probe of its /readyz brings it back
    reported: int = 0  # the queue depth it last reported (its requests in flight, from every router)
    reported_at: float = -math.inf  # when (monotonic)

    @property
    def available(self) -> bool:
        return not self.ejected

    def report(self, depth: int, now: float) -> None:
        """The replica answered with its queue depth (``REFUSED_DEPTH`` when it refused the call)."""
        self.reported, self.reported_at = depth, now

    def load(self, now: float) -> int:
        """What balancing weighs: its fresh report, if any, plus this router's calls in flight there."""
        fresh = now - self.reported_at < REPORT_TTL_S
        return self.in_flight + (self.reported if fresh else 0)


@dataclass
class ServedModel:
    spec: NamedModel
    replicas: list[Replica] = field(default_factory=list)
    recent_request_s: float = 1.0  # how long its requests take lately (Retry-After of a refusal)
    held: int = 0  # requests waiting for a first ready replica (scale from zero)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def task(self) -> Task:
        return self.spec.task


class ModelTable:
    def __init__(self) -> None:
        self.models: dict[str, ServedModel] = {}
        self.routes: dict[str, NamedRoute] = {}
        self._public: dict[str, str] = {}
        self._route_aliases: dict[str, str] = {}  # a route's alias -> the route
        self._turn = itertools.count()
        self.created = int(time.time())
        # models someone waits on for a first ready replica: the waiters' loop and event
        self._ready: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Event]] = {}

    def set_model(self, spec: NamedModel, urls: list[str]) -> None:
        """``urls``: the model's ready replicas (none: its requests wait in ``wait_ready`` until some are set)."""
        old = self.models.get(spec.name)
        known = {r.url: r for r in old.replicas} if old else {}
        self.models[spec.name] = ServedModel(spec, [known.get(u) or Replica(u) for u in urls])
        self._reindex()
        if urls:
            self.notify_ready(spec.name)

    def set_replicas(self, name: str, urls: list[str]) -> None:
        """The ready replicas of model ``name`` now (as a pod watch learns them), in place: its counters, held
        requests and the replicas that stay are kept, and calls under way see the change."""
        model = self.models.get(name)
        if model is None:
            return
        known = {r.url: r for r in model.replicas}
        model.replicas = [known.get(u) or Replica(u) for u in urls]
        if urls:
            self.notify_ready(name)

    def notify_ready(self, name: str) -> None:
        """The hook of whatever learns readiness (the operator's ConfigMap, an EndpointSlice watch): ``name`` may
        have a ready replica now; its waiters look again. Safe from any thread (a watch may run in its own)."""
        waiting = self._ready.pop(name, None)
        if waiting is not None:
            loop, event = waiting
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits any more
                loop.call_soon_threadsafe(event.set)

    async def wait_ready(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until model ``name`` has a replica; False when it has none by then (or
        the model went away)."""
        deadline = time.monotonic() + timeout
        while True:
            model = self.models.get(name)
            if model is None:
                return False
            if model.replicas:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _, event = self._ready.setdefault(name, (asyncio.get_running_loop(), asyncio.Event()))
            with contextlib.suppress(asyncio.TimeoutError):  # looked at again each second, woken or not
                await asyncio.wait_for(event.wait(), min(left, 1.0))

    def remove_model(self, name: str) -> None:
        self.models.pop(name, None)
        self._reindex()

    def set_route(self, route: NamedRoute) -> None:
        self.routes[route.name] = route
        self._reindex()

    def _reindex(self) -> None:
        public: dict[str, str] = {}
        for model in self.models.values():
            public[model.name] = model.name
        for model in self.models.values():
            for alias in model.spec.aliases:
                public.setdefault(alias, model.name)
        self._public = public
        self._route_aliases = {alias: route.name for route in self.routes.values() for alias in route.aliases
                               if alias not in public and alias not in self.routes}

    def lookup(self, public_name: str) -> str | None:
        """The model a public name (model, alias, or dated snapshot of an alias) stands for."""
        name = self._public.get(public_name) or self._route_aliases.get(public_name)
        if name is None and (match := SNAPSHOT.match(public_name)):
            alias = match["alias"]
            if self._public.get(alias, alias) != alias:  # an alias, not a model's own name
                name = self._public[alias]
            name = name or self._route_aliases.get(alias)
        return name

    def named_route(self, public_name: str | None, task: Task) -> NamedRoute | None:
        """The declared route of ``task`` that ``public_name`` names (its name, an alias, a dated snapshot of one)."""
        if not public_name:
            return None
        route = self.routes.get(public_name) or self.routes.get(self.lookup(public_name) or "")
        return route if route is not None and route.task == task else None

    def resolve(self, public_name: str | None, task: Task, param: str = "model") -> ServedModel:
        """The model of ``task`` a public name stands for (400 when none is named or it serves another task, 404 when
        it is unknown). Whether the request may use it is the caller's check (``services.router.access``)."""
        if not public_name:
            raise InvalidRequest("'model' is required", param=param, code="missing_required_parameter")
        name = self.lookup(public_name)
        if name is None:
            served = sorted(n for n, m in self._public.items() if self.models[m].task == task)
            raise ModelNotFound(f"The model '{public_name}' does not exist. Models for this endpoint: "
                                f"{', '.join(served) or 'none'}", param=param)
        model = self.models.get(name)
        if model is None:  # a route's alias: its own endpoint runs it
            raise InvalidRequest(f"model '{public_name}' is a pipeline route and cannot serve this endpoint "
                                 f"({task.value})", param=param, code="model_task_mismatch")
        if model.task != task:
            raise InvalidRequest(f"model '{public_name}' is a {model.task.value} model and cannot serve this "
                                 f"endpoint ({task.value})", param=param, code="model_task_mismatch")
        return model

    def check_allowed(self, requested: str, served: str | None = None) -> None:
        """403 when the request's API key may not use ``requested`` (a model, alias or route) or ``served``: the
        check itself (``resolve`` and ``first_of`` only find; routes call ``services.router.access`` where they use
        one)."""
        check_model(self.lookup, requested, served)

    def first_of(self, task: Task) -> ServedModel:
        """The first model of ``task`` in the table (the default when a request names none)."""
        model = next((m for m in self.models.values() if m.task == task), None)
        if model is None:
            raise ModelNotFound(f"no {task.value} model is served", param="model")
        return model

    def route_for(self, task: Task, name: str | None = None) -> NamedRoute | None:
        """The route ``name`` when it is a route of ``task``, else the first route of ``task`` declared."""
        named = self.routes.get(name or "")
        if named is not None and named.task == task:
            return named
        return next((r for r in self.routes.values() if r.task == task), None)

    def pick(self, model: ServedModel, exclude: frozenset[str] | set[str] = frozenset()) -> Replica:
        candidates = [r for r in model.replicas if r.available and r.url not in exclude]
        if not candidates:
            raise ServiceUnavailable(f"model '{model.name}' is unavailable: no replica of its service is reachable")
        if len(candidates) > 2:
            candidates = random.sample(candidates, 2)  # power of two choices: no herd on one stale low report
        now = time.monotonic()
        loads = [r.load(now) for r in candidates]
        best = [r for r, load in zip(candidates, loads, strict=True) if load == min(loads)]
        return best[next(self._turn) % len(best)]

    def public_entries(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for public, name in sorted(self._public.items()):
            model = self.models[name]
            entries.append({"id": public, "object": "model", "created": self.created, "owned_by": "harmony",
                            "task": model.task.value, "backend": model.spec.backend,
                            **({"alias_of": name} if public != name else {}),
                            "languages": model.spec.languages})
        for route in self.routes.values():
            for public in [route.name, *(a for a, name in self._route_aliases.items() if name == route.name)]:
                entries.append({"id": public, "object": "model", "created": self.created, "owned_by": "harmony",
                                "task": route.task.value, "pipeline": [s.model_dump() for s in route.steps],
                                **({"alias_of": route.name} if public != route.name else {})})
        return entries
