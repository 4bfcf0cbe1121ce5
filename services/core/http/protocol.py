"""uvicorn's HTTP/1.1 protocol, hardened: a request-head timeout, a connection limit, TCP_NODELAY,
and the answers uvicorn writes itself (malformed requests, too many connections) in OpenAI's error shape.

uvicorn closes an idle kept-alive connection but never one that opened and sends nothing, or sends
its request head a byte at a time; here the head must arrive within ``header_timeout_s`` of the
connection opening (or, on a kept-alive connection, of the next request's first byte). A connection
opened while ``max_connections`` are already open is answered 503 at its first request and closed,
rather than left waiting. The body's own timeouts are ``services/core/http/body_timeouts.py``.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from services.core.contracts.errors import error_body, error_headers, openai_type

log = logging.getLogger("harmony.http")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    max_connections: int = 1024


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Send small writes at once (no Nagle): a response's head and body leave without waiting for an ACK."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the connection is already gone
            pass


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 error response in OpenAI's shape that closes the connection, as raw bytes."""
    body = json.dumps(error_body(message, openai_type(status), None, code)).encode()
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in error_headers(status, headers).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Throttled:
    """At most one warning per ``every_s``, with the number of events it stands for."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.last = float("-inf")
        self.count = 0

    def warning(self, message: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            log.warning("%s (%d since the last such warning)", message, self.count)
            self.last, self.count = now, 0


_over_limit_warning = _Throttled()


class HarmonyProtocol(H11Protocol):
    """``uvicorn.Config(http=HarmonyProtocol.with_limits(...))``."""

    limits = ConnectionLimits()

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> type[HarmonyProtocol]:
        return type(cls.__name__, (cls,), {"limits": limits})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._over_limit = False
        self._inner_app = self.app
        self.app = self._admit  # handle_events calls self.app for every request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        set_nodelay(transport)
        self._over_limit = len(self.connections) > self.limits.max_connections
        self._start_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._start_head_timer()  # the first byte of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request h11 cannot parse: 400 in OpenAI's shape (uvicorn answers plain text)."""
        self._cancel_head_timer()
        if not self.transport.is_closing():
            self.transport.write(error_response(400, "the request is not valid HTTP/1.1", "invalid_http_request"))
            self.transport.close()

    async def _admit(self, scope: Any, receive: Any, send: Any) -> None:
        if not self._over_limit:
            await self._inner_app(scope, receive, send)
            return
        _over_limit_warning.warning(f"refused a connection: {self.limits.max_connections} connections are open "
                                    f"(server.max_connections)")
        body = json.dumps(error_body("the server has too many open connections; retry shortly",
                                     openai_type(503), None, "too_many_connections")).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close"), (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body})

    def _start_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        """No whole request head in time: 408 if part of one came (a client that sent nothing gets no answer)."""
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            message = f"the request head did not arrive within {self.limits.header_timeout_s:g} s"
            self.transport.write(error_response(408, message, "request_header_timeout"))
        log.debug("closed a connection whose request head did not arrive in time (client %s)", self.client)
        self.transport.close()
