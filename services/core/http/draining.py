"""A server that is shutting down drains: its readiness turns false, it starts no new work, and what is still
running when the drain time is over is answered, not left to hang.

In Kubernetes a pod that is deleted leaves its Service's EndpointSlice (ready: false) while its preStop
hook sleeps, so routers stop sending it requests; then SIGTERM. From SIGTERM on (``drain_on_signal``) the
service's ``/readyz`` answers 503 (``draining``), and a new model call (``POST``) is refused with 503
``draining`` before its body is read, so the router tries another pod: a request that slipped through
(a router slow to see the EndpointSlice change) is never started on a pod that is going away. Requests
already running finish while the listener is closed, for up to the drain time (``--drain-timeout``,
``server.drain_timeout_s``).

When the drain time is over (``Drain.ended``), ``CancelOnDisconnect`` (services/core/http/disconnect.py) cancels the
work of every request still running and answers it 503 ``shutting_down`` (``Retry-After: 1``); a response already
streaming is cut, its body left incomplete as after any failure mid-stream (never a silent end that looks whole).
uvicorn's own cancellation (``timeout_graceful_shutdown``, which would answer a bare 500) comes ``BACKSTOP_S``
later, only for what ignored this. The batchers then give up what they still hold (``DynamicBatcher.stop``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from services.core.contracts.errors import ServiceUnavailable

log = logging.getLogger("harmony.service")

BACKSTOP_S = 1.0  # uvicorn cancels what is still running this long after the drain time (a bare 500)


class Drain:
    """Whether the server drains (set once, at SIGTERM), and when its drain time is over."""

    def __init__(self) -> None:
        self.draining = False
        self._ended: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, drain_s: float | None = None) -> None:
        """Drain from now; with ``drain_s`` (> 0), the drain time ends that many seconds later. Safe to call from a
        signal handler on the loop's thread."""
        if not self.draining:
            log.info("draining: not ready, no new model calls; in-flight requests finish%s",
                     f" (up to {drain_s:g} s)" if drain_s else "")
        self.draining = True
        if drain_s and self._timer is None:
            loop = asyncio.get_running_loop() if self._ended is None else self._ended.get_loop()
            loop.call_soon_threadsafe(self._arm, drain_s)

    def _arm(self, drain_s: float) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(drain_s, self.end)

    def end(self) -> None:
        """The drain time is over: the requests still running are answered 503 ``shutting_down``."""
        ended = self.ended()
        if not ended.done():
            ended.set_result(None)

    def ended(self) -> asyncio.Future[None]:
        """A future resolved when the drain time is over (made on first use, on the running loop)."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        return self._ended


def refusal() -> ServiceUnavailable:
    return ServiceUnavailable("this replica is shutting down; the request was not started",
                              code="draining", headers={"Retry-After": "1"})


def shutting_down() -> ServiceUnavailable:
    return ServiceUnavailable("the server shut down before this request finished; retry it",
                              code="shutting_down", headers={"Retry-After": "1"})


class RefuseWhileDraining:
    """ASGI middleware: while ``drain`` is on, a new ``POST`` gets 503 ``draining`` (and the connection closes)."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.drain.draining or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        await send_error(send, refusal())


async def send_error(send: Send, error: ServiceUnavailable) -> None:
    """``error`` as a whole response that closes its connection."""
    body = json.dumps(error.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *((k.encode(), v.encode()) for k, v in error.response_headers().items())]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def drain_on_signal(server: uvicorn.Server, drain: Drain, drain_s: float | None = None) -> None:
    """At SIGTERM (or Ctrl-C) ``drain`` starts (its time ending after ``drain_s``), then uvicorn's own graceful
    shutdown (stop listening, let in-flight requests finish)."""
    handle_exit = server.handle_exit

    def draining_exit(sig: int, frame: FrameType | None) -> None:
        drain.start(drain_s)
        handle_exit(sig, frame)

    server.handle_exit = draining_exit  # type: ignore[method-assign]  # capture_signals reads the attribute
