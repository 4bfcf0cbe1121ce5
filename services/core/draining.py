"""A model service that is shutting down drains: its readiness turns false and it starts no new work.

In Kubernetes a pod that is deleted leaves its Service's EndpointSlice (ready: false) while its preStop
hook sleeps, so routers stop sending it requests; then SIGTERM. From SIGTERM on (``drain_on_signal``) the
service's ``/readyz`` answers 503 (``draining``), and a new model call (``POST``) is refused with 503
``draining`` before its body is read, so the router tries another pod: a request that slipped through
(a router slow to see the EndpointSlice change) is never started on a pod that is going away. Requests
already running finish (uvicorn waits up to ``--drain-timeout`` for them) while the listener is closed.
"""

from __future__ import annotations

import json
import logging
from types import FrameType

import uvicorn
from services.core.errors import ServiceUnavailable
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("harmony.service")


class Drain:
    """Whether the service drains (set once, at SIGTERM)."""

    def __init__(self) -> None:
        self.draining = False

    def start(self) -> None:
        if not self.draining:
            log.info("draining: not ready, no new model calls; in-flight requests finish")
        self.draining = True


def refusal() -> ServiceUnavailable:
    return ServiceUnavailable("this replica is shutting down; the request was not started",
                              code="draining", headers={"Retry-After": "1"})


class RefuseWhileDraining:
    """ASGI middleware: while ``drain`` is on, a new ``POST`` gets 503 ``draining`` (and the connection closes)."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.drain.draining or scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        error = refusal()
        body = json.dumps(error.to_body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close"), *((k.encode(), v.encode()) for k, v in error.response_headers().items())]
        await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def drain_on_signal(server: uvicorn.Server, drain: Drain) -> None:
    """At SIGTERM (or Ctrl-C) ``drain`` starts, then uvicorn's own graceful shutdown (stop listening, let
    in-flight requests finish)."""
    handle_exit = server.handle_exit

    def draining_exit(sig: int, frame: FrameType | None) -> None:
        drain.start()
        handle_exit(sig, frame)

    server.handle_exit = draining_exit  # type: ignore[method-assign]  # capture_signals reads the attribute
