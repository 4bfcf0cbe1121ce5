"""Admission control in the router: overload is refused at the door, with 429 and Retry-After.

A model takes at most as many requests at once as its services can hold: per replica, its
batch queue plus the batches it computes at once (``max_queue_size + max_batch_size x instances``).
A request past that is refused at once, before its body travels on, instead of waiting in a
connection pool until its client gives up. ``Retry-After`` comes from how long the model's
recent requests took.

Deadlines travel with the request: a client that says how long it will wait (the official
OpenAI SDKs send ``X-Stainless-Timeout``; any client may send ``X-Harmony-Timeout``, seconds)
gets that as its deadline, capped by the router's own timeout for a model call. The router
passes what is left of it to the model service (``X-Harmony-Deadline-S``), whose batcher refuses
a new request that cannot start before then (429), and drops any part of it still queued when
the deadline passes.

The deadline and the priority a client announced are the request field ``CLIENT_CALL``
(:mod:`services.core.runtime.request_state`): ``ClientDeadline`` binds it for the request (``call_as`` sets it for
a task the router starts itself), and ``deadline_header`` and ``client_remaining_s`` read it for each model call.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from services.core.contracts.errors import QueueFull
from services.core.runtime.request_state import RequestField
from services.core.runtime.timing import PRIORITIES, PRIORITY_HEADER, header_seconds, priority_of
from services.router.routing import ServedModel

CLIENT_TIMEOUT_HEADERS = (b"x-harmony-timeout", b"x-stainless-timeout")
DEADLINE_HEADER = "x-harmony-deadline-s"
MIN_TIMEOUT_S = 0.1


@dataclass(frozen=True)
class ClientCall:
    """How a client wants the model calls made on its behalf."""

    deadline: float | None = None  # time.monotonic() by which it wants its answer, if it said
    priority: str | None = None  # a PRIORITIES name ("batch" from a client, "realtime" from the router), or None


CLIENT_CALL: RequestField[ClientCall] = RequestField(
    "client_call", "the deadline and priority a client announced to the router, for its model calls (ClientDeadline)")


def replica_capacity(model: ServedModel) -> int:
    batching = model.spec.batching
    return batching.max_queue_size + batching.max_batch_size * batching.instances


def capacity(model: ServedModel) -> int:
    """Requests ``model`` may have in flight. One URL may front several pods (a Kubernetes Service): count the
    pods the model may scale to."""
    replicas = len(model.replicas)
    if replicas == 1:
        autoscaling = model.spec.autoscaling
        replicas = max(1, model.spec.replicas, autoscaling.max_replicas if autoscaling else 0)
    return max(1, replicas) * replica_capacity(model)


def in_flight(model: ServedModel) -> int:
    """Requests at the model's replicas, and those held for it while a first replica starts."""
    return sum(r.in_flight for r in model.replicas) + model.held


def client_remaining_s() -> float | None:
    """Seconds left of the deadline the client announced (None: it announced none)."""
    call = CLIENT_CALL.get()
    return None if call is None or call.deadline is None else call.deadline - time.monotonic()


def admit(model: ServedModel) -> None:
    """Refuse a new request for ``model`` with 429 when it already has as many as its services can hold."""
    limit = capacity(model)
    if in_flight(model) >= limit:
        raise QueueFull(f"model '{model.name}' is at capacity ({limit} requests in progress); retry later",
                        headers={"Retry-After": str(retry_after_s(model))})


def retry_after_s(model: ServedModel) -> int:
    return max(1, math.ceil(model.recent_request_s))


def observe(model: ServedModel, seconds: float) -> None:
    """A request to ``model`` took ``seconds``: fold it into the estimate behind Retry-After."""
    model.recent_request_s = 0.8 * model.recent_request_s + 0.2 * seconds


def deadline_header(cap_s: float) -> dict[str, str]:
    """The headers telling a model service how long this request may still take (the client's deadline, if it
    gave one, capped at ``cap_s``, the router's timeout for a model call) and its priority, if it is not normal."""
    call = CLIENT_CALL.get() or ClientCall()
    remaining = cap_s
    if call.deadline is not None:
        remaining = min(remaining, call.deadline - time.monotonic())
    headers = {DEADLINE_HEADER: f"{max(remaining, 0.0):.3f}"}
    if call.priority is not None:
        headers[PRIORITY_HEADER] = call.priority
    return headers


def call_as(priority: str | None = None, timeout_s: float | None = None) -> None:
    """The priority and deadline of the model calls the current task makes from now on (a task the router starts
    itself, such as a realtime session's decodes; a task's context variables are its own)."""
    CLIENT_CALL.set(ClientCall(None if timeout_s is None else time.monotonic() + timeout_s, priority))


def _client_priority(scope: Scope) -> str | None:
    """The priority a client asked for: only ever lower than interactive (``batch``), never above it."""
    priority = priority_of(scope)
    return priority if priority is not None and PRIORITIES[priority] > 0 else None


def _client_timeout(scope: Scope) -> float | None:
    for name, value in scope.get("headers", ()):
        if name in CLIENT_TIMEOUT_HEADERS:
            seconds = header_seconds(value)
            if seconds:  # 0 says nothing
                return max(seconds, MIN_TIMEOUT_S)
    return None


class ClientDeadline:
    """ASGI middleware: the deadline and the priority a client announced (it binds ``CLIENT_CALL``), for every model
    call made on its behalf."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        timeout = _client_timeout(scope) if scope["type"] == "http" else None
        priority = _client_priority(scope) if scope["type"] == "http" else None
        if timeout is None and priority is None:
            await self.app(scope, receive, send)
            return
        with CLIENT_CALL.bound(ClientCall(None if timeout is None else time.monotonic() + timeout, priority)):
            await self.app(scope, receive, send)
