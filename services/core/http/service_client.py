"""The router's HTTP/1.1 transport to the model services: httpx's API, a lean connection pool underneath.

httpx's default transport (httpcore, parsing with the pure-Python h11) costs about 0.7 ms of CPU per
call, more than the model service takes to answer a cheap request; in ``harmony serve`` the router
and the services share one event loop, so every call pays it on the critical path. This transport
speaks only what the router needs to its own services, plain HTTP/1.1 on TCP or a Unix socket,
with an asyncio protocol and ``httptools``' C parser, and keeps httpx's behaviour where it matters:

- errors are httpx's: ``ConnectError``/``ConnectTimeout`` (the replica is ejected),
  ``ReadTimeout``/``WriteTimeout``/``PoolTimeout``, ``RemoteProtocolError``/``ReadError`` for a
  connection that broke, each with the timeouts of the request's ``extensions["timeout"]``;
- a call cancelled before its answer has been read closes its connection (the service hears the
  disconnect and cancels its work), as does a streamed answer closed before its end;
- ``max_connections`` bounds the connections open at once (``PoolTimeout`` past the pool timeout),
  at most ``max_keepalive_connections`` idle ones are kept, each for ``keepalive_expiry`` seconds;
- a request body is sent with its head in one write; a streamed answer is read with flow control.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httptools
import httpx

from services.core.http.protocol import set_nodelay
from services.core.http.service_url import UNIX_BASE_URL, socket_path
from services.core.runtime import tracing
from services.core.runtime.logs import request_id_header

HIGH_WATER = 256 * 1024  # bytes of answer buffered before the socket is no longer read
ONE_WRITE = 256 * 1024  # bodies up to this size go out in the same write as the head
USE_DEFAULT: Any = object()  # a call's ``timeout`` when it gives none: the client's
KEEPALIVE_EXPIRY_S = 5.0  # well below the services' own keep-alive (server.keep_alive_s, 30 s by default)


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection to a service: one request at a time, its answer parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, int]) -> None:
        self.loop = loop
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = self.complete = self.persistent = False
        self.error: Exception | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._reading_paused = False

    def reusable(self, now: float) -> bool:
        return not self.closed and now - self.idle_since < KEEPALIVE_EXPIRY_S

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"the service sent an invalid HTTP answer: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.head_done and not self.complete and self._reads_to_close():
            self.complete = True  # a body without length nor chunks ends with the connection
        if not self.complete:
            self._fail(httpx.ReadError("the service closed the connection") if self.head_done else
                       httpx.RemoteProtocolError("the service closed the connection without answering"))
        self._wake(self._writable)

    def pause_writing(self) -> None:
        self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        self._wake(self._writable)
        self._writable = None

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.head_done = True
        self._wake(self._waiter)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake(self._waiter)

    def on_message_complete(self) -> None:
        self.complete = True
        self.persistent = self.parser.should_keep_alive()  # asked later, llhttp has forgotten
        self._wake(self._waiter)

    # the pool's side
    async def send(self, parts: list[bytes], timeout: float | None) -> None:
        assert self.transport is not None
        if self.closed:
            raise httpx.RemoteProtocolError("the connection to the service closed before the request was sent")
        for part in parts:
            self.transport.write(part)
        if self._writable is not None and not self.closed:
            await self._until(self._writable, timeout, httpx.WriteTimeout)

    async def head(self, timeout: float | None) -> None:
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._until(self.loop.create_future(), timeout, httpx.ReadTimeout, waiter=True)

    async def chunk(self, timeout: float | None) -> bytes | None:
        """The next part of the answer's body; None at its end."""
        while not self._chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._until(self.loop.create_future(), timeout, httpx.ReadTimeout, waiter=True)
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._reading_paused and self._buffered <= HIGH_WATER // 4 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def keep_alive(self) -> bool:
        return self.complete and self.persistent and not self.closed

    def recycle(self) -> None:
        """Ready for the next request on this connection (the last answer was read in full)."""
        self._reset()
        self.idle_since = self.loop.time()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _reads_to_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake(self._waiter)

    async def _until(self, future: asyncio.Future, timeout: float | None, error: type[httpx.TimeoutException],
                     waiter: bool = False) -> None:
        if waiter:
            self._waiter = future
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, future, error)
        try:
            await future
        finally:
            if timer is not None:
                timer.cancel()
            if waiter:
                self._waiter = None

    @staticmethod
    def _wake(future: asyncio.Future | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)


def _expire(future: asyncio.Future, error: type[httpx.TimeoutException]) -> None:
    if not future.done():
        future.set_exception(error("the model service did not answer in time"))


class _Body(httpx.AsyncByteStream):
    """A streamed answer's body as it arrives; closing it gives the connection back (read in full) or closes it."""

    def __init__(self, pool: _Pool, connection: _Connection, timeout: float | None) -> None:
        self.pool, self.connection, self.timeout = pool, connection, timeout
        self.released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self.connection.chunk(self.timeout)) is not None:
            yield chunk

    async def aclose(self) -> None:
        if not self.released:
            self.released = True
            self.pool.release(self.connection)


class _Pool:
    """The connections to one service: at most ``max_connections`` open, ``max_keepalive_connections`` kept idle."""

    def __init__(self, uds: str | None, host: str, port: int, limits: httpx.Limits) -> None:
        self.uds, self.host, self.port = uds, host, port
        self.max_keepalive = _limit(limits.max_keepalive_connections)
        self._slots = asyncio.Semaphore(_limit(limits.max_connections))
        self.idle: list[_Connection] = []
        self.in_use = 0  # connections carrying a request now
        self.closed = False

    async def acquire(self, timeout: httpx.Timeout) -> _Connection:
        if self.closed:
            raise RuntimeError("the client has been closed")
        await self._take_slot(timeout.pool)
        self.in_use += 1
        now = asyncio.get_running_loop().time()
        while self.idle:
            connection = self.idle.pop()
            if connection.reusable(now):
                return connection
            connection.close()
        try:
            return await self._connect(timeout.connect)
        except BaseException:
            self._give_slot()
            raise

    def release(self, connection: _Connection) -> None:
        """The connection's request is over: kept for the next one if its answer was read in full, else closed."""
        self._give_slot()
        if connection.keep_alive() and not self.closed and len(self.idle) < self.max_keepalive:
            connection.recycle()
            self.idle.append(connection)
        else:
            connection.close()

    def aclose(self) -> None:
        self.closed = True
        for connection in self.idle:
            connection.close()
        self.idle.clear()

    def _give_slot(self) -> None:
        self.in_use -= 1
        self._slots.release()

    async def _take_slot(self, timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection to the model service came free in time") from None

    async def _connect(self, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        origin = (self.host, self.port)
        try:
            async with asyncio.timeout(timeout):
                if self.uds is not None:
                    _, connection = await loop.create_unix_connection(lambda: _Connection(loop, origin), self.uds)
                else:
                    _, connection = await loop.create_connection(lambda: _Connection(loop, origin), self.host,
                                                                 self.port, proto=socket.IPPROTO_TCP)
        except TimeoutError:
            raise httpx.ConnectTimeout("connecting to the model service timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to the model service: {exc}") from None
        return connection


def _limit(value: int | None) -> int:
    return (1 << 30) if value is None else value


class ServiceResponse(httpx.Response):
    """httpx's Response; its ``request`` (for ``raise_for_status`` and error messages) is made when asked for."""

    def __init__(self, status_code: int, method: str, url: str, **kwargs: Any) -> None:
        super().__init__(status_code, **kwargs)
        self._method_url = (method, url)

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            self._request = httpx.Request(*self._method_url)
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value

    def raise_for_status(self) -> httpx.Response:
        self._request = self.request  # httpx reads the attribute, not the property
        return super().raise_for_status()


class ServiceClient:
    """The calls of ``httpx.AsyncClient`` that the router makes, to the service at ``url`` (``http://host:port``
    or ``unix:/path``): ``get``, ``post``, ``delete``, ``request`` (the answer read) and ``stream``; the request's
    body from ``json``, ``data``, ``files`` or ``content`` as httpx encodes them; httpx's responses and errors."""

    def __init__(self, url: str, timeout: httpx.Timeout, limits: httpx.Limits) -> None:
        path = socket_path(url)
        parsed = httpx.URL(UNIX_BASE_URL if path is not None else url)
        if parsed.scheme != "http":
            raise ValueError(f"a model service is reached over plain http or a Unix socket, not {url!r}")
        port = parsed.port or 80
        self.base_url = str(parsed).rstrip("/")
        self._prefix = parsed.raw_path.rstrip(b"/")
        self._host = parsed.host.encode() + (b"" if parsed.port is None else b":%d" % port)
        self.timeout = timeout
        self._pool = _Pool(path, parsed.host, port, limits)

    @property
    def connections_in_use(self) -> int:
        return self._pool.in_use

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def request(self, method: str, path: str, *, timeout: Any = USE_DEFAULT, **kwargs: Any) -> httpx.Response:
        """Send the request and read its whole answer."""
        timeouts = self._timeouts(timeout)
        with tracing.client_span(method, path, self.base_url) as span:  # None unless the request is traced
            connection = await self._send(method, path, timeouts, kwargs, span)
            status, headers, extensions = connection.status, connection.headers, _extensions(connection)
            tracing.answered(span, status)
            try:
                chunks = []
                while (chunk := await connection.chunk(timeouts.read)) is not None:
                    chunks.append(chunk)
            finally:
                self._pool.release(connection)
        return ServiceResponse(status, method, self.base_url + path, headers=headers, content=b"".join(chunks),
                               extensions=extensions)

    @contextlib.asynccontextmanager
    async def stream(self, method: str, path: str, *, timeout: Any = USE_DEFAULT,
                     **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """Send the request; the answer's body is read as it comes, inside the block."""
        timeouts = self._timeouts(timeout)
        with tracing.client_span(method, path, self.base_url) as span:  # until the answer's end, when traced
            connection = await self._send(method, path, timeouts, kwargs, span)
            tracing.answered(span, connection.status)
            body = _Body(self._pool, connection, timeouts.read)
            response = ServiceResponse(connection.status, method, self.base_url + path, headers=connection.headers,
                                       stream=body, extensions=_extensions(connection))
            try:
                yield response
            finally:
                await response.aclose()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the idle connections; no new call may start (calls under way end as they would)."""
        self._pool.aclose()

    async def _send(self, method: str, path: str, timeouts: httpx.Timeout, kwargs: dict,
                    span: Any = None) -> _Connection:
        """A connection that has sent the request (with ``span``'s trace context) and read its answer's head."""
        extra = tracing.headers(span) if span is not None else []
        if not any(name == b"x-request-id" for name, _ in extra):
            extra += request_id_header()  # the model service's log lines carry the router's request id
        parts = encode_request(method, self._prefix + path.encode(), self._host, kwargs, extra)
        connection = await self._pool.acquire(timeouts)
        try:
            await connection.send(parts, timeouts.write)
            await connection.head(timeouts.read)
        except BaseException:  # cancelled, timed out or broken: this connection is done
            self._pool.release(connection)
            raise
        if method == "HEAD":  # no body follows; the parser would wait for one
            connection.complete, connection.persistent = True, False
        return connection

    def _timeouts(self, timeout: Any) -> httpx.Timeout:
        if timeout is USE_DEFAULT:
            return self.timeout
        return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


def _extensions(connection: _Connection) -> dict[str, Any]:
    return {"http_version": b"HTTP/1.1", "network_stream": connection.transport}


def encode_request(method: str, target: bytes, host: bytes, kwargs: dict,
                   extra: Sequence[tuple[bytes, bytes]] = ()) -> list[bytes]:
    """The request's head (with the ``extra`` header lines: a trace's context) and body (in one write when small),
    the body encoded by httpx from ``json``, ``data``, ``files`` or ``content``."""
    headers = kwargs.pop("headers", None) or {}
    lines = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in (headers.items() if hasattr(headers, "items") else headers):
        lines += [_bytes(name), b": ", _bytes(value), b"\r\n"]
    for name, value in extra:
        lines += [name, b": ", value, b"\r\n"]
    body = b""
    if any(value is not None for value in kwargs.values()):
        encoded = httpx.Request(method, UNIX_BASE_URL, **kwargs)
        body = encoded.read()
        for name, value in encoded.headers.raw:
            if name.lower() == b"content-type":
                lines += [b"content-type: ", value, b"\r\n"]
    if body or method in ("POST", "PUT", "PATCH"):
        lines += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
    head = b"".join([*lines, b"\r\n"])
    return [head + body] if len(body) <= ONE_WRITE else [head, body]


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")
