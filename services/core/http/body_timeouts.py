"""Request bodies that stall: answered 400 ``request_body_timeout`` in OpenAI's shape, and the connection closed.

A pure ASGI middleware, outermost in every server (``services/core/http/server.py``), around the
``receive`` channel, so it covers every way a body is read (JSON, ``read_form``'s streamed multipart).
While the app waits for the next part of a body it waits at most ``idle_s``; and, like Apache's
mod_reqtimeout, the whole body gets ``idle_s`` plus one second per ``min_bytes_per_s`` bytes received,
so a body trickling in a byte a second is cut too. A body shorter than its Content-Length never ends:
it meets the same timeout. Once the body is complete, ``receive`` (waiting for a disconnect) is not timed.

On a timeout ``receive`` raises ``BodyTimeout`` (a typed 400), so the app answers it like any bad request
(its metrics and audit line included); the response gets ``Connection: close`` (the rest of the body may
still come), and an app that swallowed the error and answered nothing gets the 400 from here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.contracts.errors import InvalidRequest

log = logging.getLogger("harmony.http")

DISCONNECT: Message = {"type": "http.disconnect"}


class BodyTimeout(InvalidRequest):
    default_code = "request_body_timeout"


class BodyTimeouts:
    def __init__(self, app: ASGIApp, idle_s: float = 30.0, min_bytes_per_s: float = 1024.0) -> None:
        self.app = app
        self.idle_s = idle_s
        self.min_bytes_per_s = min_bytes_per_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _TimedBody(receive, send, self.idle_s, self.min_bytes_per_s)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if body.error is None or body.response_started:
                raise
        if body.error is not None and not body.response_started:
            await body.answer()


class _TimedBody:
    def __init__(self, receive: Receive, send: Send, idle_s: float, min_bytes_per_s: float) -> None:
        self._receive, self._send = receive, send
        self.idle_s, self.min_bytes_per_s = idle_s, min_bytes_per_s
        self.started: float | None = None
        self.received = 0
        self.complete = False
        self.error: BodyTimeout | None = None
        self.response_started = False

    def _wait_s(self) -> float:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        wait = self.idle_s
        if self.min_bytes_per_s > 0:
            wait = min(wait, self.started + self.idle_s + self.received / self.min_bytes_per_s - now)
        return max(wait, 0.0)

    async def receive(self) -> Message:
        if self.error is not None:
            return DISCONNECT
        if self.complete:
            return await self._receive()
        try:
            async with asyncio.timeout(self._wait_s()):
                message = await self._receive()
        except TimeoutError:
            raise self._timed_out() from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        else:
            self.complete = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
            if self.error is not None:  # the rest of the body may still come: this connection is done
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)

    def _timed_out(self) -> BodyTimeout:
        log.info("request body timed out after %d bytes (server.body_timeout_s %g s, body_min_bytes_per_s %g)",
                 self.received, self.idle_s, self.min_bytes_per_s)
        self.error = BodyTimeout(f"the request body did not arrive in time ({self.received} bytes came; the server "
                                 f"waits {self.idle_s:g} s for each part)")
        return self.error

    async def answer(self) -> None:
        """The 400, for an app that answered nothing."""
        assert self.error is not None
        body = json.dumps(self.error.to_body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.error.response_headers().items()]
        await self.send({"type": "http.response.start", "status": 400, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
