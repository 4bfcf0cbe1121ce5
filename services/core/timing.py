"""Where a request's time went inside a model service: waiting in batch queues, and computing.

The batcher adds each item's queue wait and its batch's compute time to the request's
``RequestTiming`` (a context variable, so tasks a handler starts share it); the
``TimingHeaders`` middleware answers the totals so far as response headers, and the router
adds them to the request's audit line. A streamed answer's headers leave with its first
chunk, so they hold the time of what was computed before it (the first sentence of speech).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

QUEUE_HEADER = "x-harmony-queue-ms"
COMPUTE_HEADER = "x-harmony-compute-ms"


@dataclass
class RequestTiming:
    queue_s: float = 0.0
    compute_s: float = 0.0


_timing: ContextVar[RequestTiming | None] = ContextVar("harmony_request_timing", default=None)


def record(queue_s: float, compute_s: float) -> None:
    """Add one batch item's queue wait and its batch's compute time to the current request, if any."""
    timing = _timing.get()
    if timing is not None:
        timing.queue_s += queue_s
        timing.compute_s += compute_s


class TimingHeaders:
    """ASGI middleware of a model service: a RequestTiming per request, answered as two headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing = RequestTiming()
        token = _timing.set(timing)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (QUEUE_HEADER.encode(), f"{timing.queue_s * 1000:.1f}".encode()),
                                      (COMPUTE_HEADER.encode(), f"{timing.compute_s * 1000:.1f}".encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _timing.reset(token)


def from_headers(headers) -> tuple[float, float] | None:
    """(queue ms, compute ms) a model service answered, or None when it did not say."""
    try:
        return float(headers[QUEUE_HEADER]), float(headers[COMPUTE_HEADER])
    except (KeyError, ValueError):
        return None
