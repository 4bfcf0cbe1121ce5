"""Authentication and the audit trail as a pure ASGI middleware.

Pure ASGI (not ``@app.middleware("http")``): the request's receive channel reaches the route
untouched, so the code that watches for client disconnects still sees them, and the request's record (its key)
is bound (``services.auth.guard.REQUEST_RECORD``, a request field) in the very task that runs the route.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.auth.gate import REQUEST_ID, Gate, is_open
from services.auth.guard import REQUEST_RECORD, RequestRecord
from services.core.contracts.errors import HarmonyError
from services.core.runtime import tracing
from services.core.runtime.logs import LOG_CONTEXT, LogContext
from services.core.runtime.timing import SERVER_TIMING_HEADER, server_timing

QUERY_KEY = "api_key"  # browsers cannot set headers on a WebSocket
# Set in the ASGI scope (never from a header: no client can forge it) on the requests the batch runner makes in
# process: {"key_id": the batch's API key or None}.
BATCH_SCOPE = "harmony.batch"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def presented_key(scope: Scope) -> str | None:
    """The key from ``Authorization: Bearer``, ``X-API-Key``, or the ``api_key`` query parameter."""
    authorization = _header(scope, b"authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    if api_key := _header(scope, b"x-api-key"):
        return api_key.strip()
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(QUERY_KEY)
    return values[0] if values else None


def _record(scope: Scope, gate: Gate) -> RequestRecord:
    wanted = _header(scope, b"x-request-id")
    request_id = wanted if wanted and REQUEST_ID.match(wanted) else "req_" + secrets.token_hex(12)
    client = scope.get("client")
    return RequestRecord(request_id=request_id, method=scope.get("method", "WS"), route=scope.get("path", ""),
                         client=client[0] if client else None, gate=gate)


def timing_of(record: RequestRecord) -> str:
    """The router's ``Server-Timing`` as the answer's head leaves: the model services' queue and compute time (their
    answers' headers, summed), the router's time waiting on them, and its whole time so far."""
    return server_timing(queue=record.queue_ms, compute=record.compute_ms, upstream=record.upstream_now_ms(),
                         total=record.elapsed_ms())


class AuthAuditMiddleware:
    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        record = _record(scope, self.gate)
        record.trace_id = tracing.tag_request(record.request_id)  # the request's span named; None when untraced
        try:
            with REQUEST_RECORD.bound(record), LOG_CONTEXT.bound(LogContext(request_id=record.request_id)):
                await self._admit_and_call(scope, receive, send, record)
        finally:
            if not record.finished:
                record.finished = True
                await self.gate.afinish(record)

    async def _admit_and_call(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        """The key checked (a refusal answered here), then the app called."""
        try:
            if self.gate.required and BATCH_SCOPE in scope:  # a batch's request, made by the engine itself
                await asyncio.to_thread(self.gate.admit_key, record, scope[BATCH_SCOPE].get("key_id"))
            elif self.gate.required:  # a database round trip, off the event loop (without auth: nothing to do)
                await asyncio.to_thread(self.gate.admit, record, presented_key(scope))
        except HarmonyError as exc:
            record.status = exc.status_code
            await _refuse(scope, send, exc, record)
            return
        await self._call(scope, receive, send, record)

    async def _call(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
                headers = list(message.get("headers", []))
                for name, value in headers:
                    if name == b"content-type":
                        record.content_type = value.decode("latin-1")
                    elif name == b"x-sample-rate" and value.isdigit():
                        record.sample_rate = int(value)
                headers += [(b"x-request-id", record.request_id.encode())]
                headers += [(k.encode(), v.encode()) for k, v in record.extra_headers.items()]
                headers += [(SERVER_TIMING_HEADER.encode(), timing_of(record).encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                record.body_bytes += len(message.get("body", b""))
                if not message.get("more_body", False) and not record.finished:
                    record.finished = True  # usage is charged before the client sees the end of the response
                    await self.gate.afinish(record)
            elif message["type"] == "websocket.accept":
                record.status = 101
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except BaseException:
            record.status = record.status or 500
            raise


async def _refuse(scope: Scope, send: Send, exc: HarmonyError, record: RequestRecord) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        return
    body = json.dumps(exc.to_body()).encode()
    headers = {**record.extra_headers, **exc.headers, "x-request-id": record.request_id,
               SERVER_TIMING_HEADER: timing_of(record), "content-type": "application/json",
               "content-length": str(len(body))}
    if exc.status_code == 401:
        headers["www-authenticate"] = 'Bearer realm="harmony"'
    await send({"type": "http.response.start", "status": exc.status_code,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": body})
