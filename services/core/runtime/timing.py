"""Where a request's time went inside a model service: waiting in batch queues, and computing.

The batcher adds each item's queue wait and its batch's compute time to the request's
``RequestTiming`` (the request field ``TIMING`` of :mod:`services.core.runtime.request_state`, so tasks a handler
starts share it; read here through ``current``, ``deadline``, ``priority`` and ``record``); the
``TimingHeaders`` middleware answers the totals so far as response headers, and the router
adds them to the request's audit line. The router also says how long the request may still take
(``x-harmony-deadline-s``); the batcher holds every item of the request to that deadline. A client reads a
streamed answer as it comes and waits that long for each part (an HTTP client's read timeout), so each
part sent moves the deadline of the parts still to come. A streamed answer's headers leave with its first
chunk, so they hold the time of what was computed before it (the first sentence of speech).

Every answer also carries the standard ``Server-Timing`` header (``server_timing``): ``queue``, ``compute`` and
``total`` (the service's time from the request's head to the answer's head) here; the router's answer adds
``upstream`` (its time waiting on model services) and its own ``total``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.runtime.logs import LOG_CONTEXT, LogContext
from services.core.runtime.request_state import TIMING, RequestTiming

QUEUE_HEADER = "x-harmony-queue-ms"
COMPUTE_HEADER = "x-harmony-compute-ms"
# the service's requests admitted and not answered yet (all its models, every caller): the router balances by it
QUEUE_DEPTH_HEADER = "x-harmony-queue-depth"
SERVER_TIMING_HEADER = "server-timing"  # the standard header (W3C Server Timing): `name;dur=ms, ...`
DEADLINE_HEADER = b"x-harmony-deadline-s"  # seconds the caller (the router) still gives this request
PRIORITY_HEADER = "x-harmony-priority"  # "batch": run after every interactive request (batch jobs, bulk work)
# batcher priorities by the header's value; interactive work is 0. "realtime" (the end of a live speaker's turn,
# which a voice assistant waits on) goes before it: only the router asks for it, never a client (admission.py).
PRIORITIES = {"realtime": -1, "batch": 1}


def current() -> RequestTiming | None:
    """The current request's timing, if a TimingHeaders middleware made one."""
    return TIMING.get()


def deadline() -> float | None:
    """The current request's deadline (monotonic seconds), when its caller gave one."""
    timing = TIMING.get()
    return timing.deadline if timing is not None else None


def _span_of(scope: Scope) -> float | None:
    for name, value in scope.get("headers", ()):
        if name == DEADLINE_HEADER:
            return header_seconds(value)
    return None


def _request_id_of(scope: Scope) -> str | None:
    """The request id the router sent (``x-request-id``), for the service's log lines; at most 128 characters."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return value.decode("latin-1")[:128] or None
    return None


def priority_of(scope: Scope) -> str | None:
    """The request's ``X-Harmony-Priority``, when it names a known priority."""
    wanted = PRIORITY_HEADER.encode()
    for name, value in scope.get("headers", ()):
        if name == wanted:
            text = value.decode("latin-1").strip().lower()
            return text if text in PRIORITIES else None
    return None


def priority() -> int:
    """The current request's priority in the batchers (0 unless it asked for ``batch``)."""
    timing = TIMING.get()
    return timing.priority if timing is not None else 0


def header_seconds(value: bytes) -> float | None:
    """A header's number of seconds; None when it is not a finite number >= 0."""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def record(queue_s: float, compute_s: float) -> None:
    """Add one batch item's queue wait and its batch's compute time to the current request, if any."""
    timing = TIMING.get()
    if timing is not None:
        timing.queue_s += queue_s
        timing.compute_s += compute_s


class TimingHeaders:
    """ASGI middleware of a model service: a RequestTiming per request (it binds ``TIMING``), answered as two
    headers; with ``depth``, the service's queue depth when the answer starts as a third (``QUEUE_DEPTH_HEADER``)."""

    def __init__(self, app: ASGIApp, depth: Callable[[], int] | None = None) -> None:
        self.app = app
        self.depth = depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        span, started = _span_of(scope), time.monotonic()
        timing = RequestTiming(deadline=None if span is None else time.monotonic() + span, span=span,
                               priority=PRIORITIES.get(priority_of(scope) or "", 0))

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (QUEUE_HEADER.encode(), f"{timing.queue_s * 1000:.1f}".encode()),
                                      (COMPUTE_HEADER.encode(), f"{timing.compute_s * 1000:.1f}".encode()),
                                      (SERVER_TIMING_HEADER.encode(), server_timing(
                                          queue=timing.queue_s * 1000, compute=timing.compute_s * 1000,
                                          total=(time.monotonic() - started) * 1000).encode()),
                                      *([(QUEUE_DEPTH_HEADER.encode(), str(self.depth()).encode())]
                                        if self.depth else [])]
            await send(message)
            if message["type"] == "http.response.body" and message.get("more_body"):
                timing.renew()

        with TIMING.bound(timing), LOG_CONTEXT.bound(LogContext(request_id=_request_id_of(scope))):
            await self.app(scope, receive, sending)


def server_timing(**durations_ms: float | None) -> str:
    """The ``Server-Timing`` value of the figures known (``name;dur=ms``, in the order given; None left out)."""
    return ", ".join(f"{name};dur={ms:.1f}" for name, ms in durations_ms.items() if ms is not None)


def depth_of(headers) -> int | None:
    """The queue depth a model service answered, or None when it did not say (or said nonsense)."""
    try:
        depth = int(headers[QUEUE_DEPTH_HEADER])
    except (KeyError, ValueError):
        return None
    return depth if depth >= 0 else None


def from_headers(headers) -> tuple[float, float] | None:
    """(queue ms, compute ms) a model service answered, or None when it did not say."""
    try:
        return float(headers[QUEUE_HEADER]), float(headers[COMPUTE_HEADER])
    except (KeyError, ValueError):
        return None
