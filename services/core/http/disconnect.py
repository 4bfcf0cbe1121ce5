"""Stop a request's work when its client goes away, whatever the work is awaiting.

``CancelOnDisconnect`` is a pure ASGI middleware. Once the request's body has been read it
listens on the connection itself; when the client disconnects before the response has ended,
it cancels the task that runs the route. Everything the route awaits is cancelled with it: a
batcher's future (the item is dropped before it is computed), an httpx call to a model service
(which closes that connection, so the service cancels its own work the same way), a streamed
body. Work already inside a running batch finishes that batch, and nothing more.

A request without a body (``GET``, ``HEAD``, ``OPTIONS`` and no ``Content-Length`` or
``Transfer-Encoding``) is passed straight through: its route never reads a body, so the listener
would never start, and the two tasks cost about 40 us of the router's time per request.

A request cancelled before its response started is recorded by the middlewares outside this
one as a 499 (nobody reads it: the client has gone), so metrics and the audit trail show it as
cancelled rather than as a server error.

Given the server's ``Drain`` (services/core/http/draining.py), it ends the same way the requests still running when the
server's drain time is over: their work is cancelled and, the client still there, answered 503 ``shutting_down``;
a response already streaming is cut (its body incomplete).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.contracts.errors import HarmonyError
from services.core.http.draining import Drain, send_error, shutting_down

log = logging.getLogger("harmony.http")


class ClientDisconnected(HarmonyError):
    """The caller went away; its work was cancelled. Rendered like any error (nobody reads it), not logged as a
    crash."""

    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_disconnected"


class _Exchange:
    """One request's view of its connection: the body read so far, the disconnect, the response's progress."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.body_read = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.response_started = False
        self.response_ended = False

    async def receive(self) -> Message:
        """The app's receive: the body as it arrives; after it, only the disconnect (which this exchange hears)."""
        if self.body_read.is_set():
            await self.disconnected.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected.set()
        elif not message.get("more_body", False):
            self.body_read.set()
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_ended = True
        await self._send(message)

    async def watch(self) -> None:
        """Return when the client disconnects before the response has ended (never returns otherwise)."""
        await self.body_read.wait()
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                if not self.response_ended:
                    return
                await asyncio.Event().wait()  # answered in full: the app is finishing its own work


class CancelOnDisconnect:
    def __init__(self, app: ASGIApp, drain: Drain | None = None) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _bodiless(scope):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(receive, send)
        work = asyncio.ensure_future(self.app(scope, exchange.receive, exchange.send))
        watcher = asyncio.ensure_future(exchange.watch())
        ended = self.drain.ended() if self.drain is not None else None
        try:
            await asyncio.wait({work, watcher} | ({ended} if ended is not None else set()),
                               return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()
                return
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await work
            if ended is not None and ended.done() and not exchange.disconnected.is_set():
                await _end_at_shutdown(scope, send, exchange)
            elif not exchange.response_started:
                await _record_cancelled(send)
        finally:
            watcher.cancel()
            if not work.done():
                work.cancel()


BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _bodiless(scope: Scope) -> bool:
    """A request that carries no body, whose route (reading none) would never hear the disconnect here."""
    if scope["method"] not in BODILESS_METHODS:
        return False
    return not any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


async def _end_at_shutdown(scope: Scope, send: Send, exchange: _Exchange) -> None:
    """The drain time is over: 503 ``shutting_down``, or, a response already begun, its body left incomplete
    (the server closes the connection), as after any failure mid-stream."""
    if exchange.response_started:
        log.warning("shutting down: cut the streamed answer of %s %s before its end", scope["method"], scope["path"])
        return
    with contextlib.suppress(OSError):
        await send_error(send, shutting_down())


async def _record_cancelled(send: Send) -> None:
    """A 499 for the middlewares outside (metrics, audit); the server drops it, the connection being closed."""
    body = json.dumps(ClientDisconnected("the client closed the connection").to_body()).encode()
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": 499,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
