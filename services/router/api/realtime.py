"""GET /v1/realtime?intent=transcription: a WebSocket speaking OpenAI's Realtime transcription-session events.

The API-key gate has already run (``AuthAuditMiddleware`` takes WebSockets too, the key from a header or the
``api_key`` query parameter, for browsers). Each message is one event; a bad one is answered with an ``error``
event and the socket stays open. A session that hears nothing for ``IDLE_TIMEOUT_S``, or lasts ``MAX_SESSION_S``,
is closed; a client that leaves cancels the session's work.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect, WebSocketState

from services.auth.guard import open_session
from services.core.contracts.errors import HarmonyError, InvalidRequest, error_body
from services.core.runtime.metrics import Metrics
from services.router.realtime import events
from services.router.realtime.models import SessionModels
from services.router.realtime.session import RealtimeSession
from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients

IDLE_TIMEOUT_S = 120.0     # no message from the client this long: the session ends
MAX_SESSION_S = 3600.0     # as OpenAI: a session lasts an hour at most
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # uvicorn's own limit on a WebSocket message (ws_max_size) is the same
MAX_SESSIONS = 256         # open sessions per router; one more is refused (close code 1013, try again later)
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER = 1000, 1008, 1013


def routes(table: ModelTable, clients: ServiceClients, metrics: Metrics) -> APIRouter:
    api = APIRouter(tags=["realtime"])
    models = SessionModels(table, clients)
    gauge = metrics.realtime_sessions
    open_sessions = 0

    @api.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        nonlocal open_sessions
        intent = websocket.query_params.get("intent", "transcription")
        if intent != "transcription" or open_sessions >= MAX_SESSIONS:
            refused = intent != "transcription"
            await websocket.accept()
            message = ("this server serves transcription sessions only: connect with ?intent=transcription"
                       if refused else "too many realtime sessions are open; try again later")
            await _send(websocket, events.error_event(InvalidRequest(message, param="intent" if refused else None,
                                                                     code="invalid_intent" if refused
                                                                     else "too_many_sessions")))
            await websocket.close(CLOSE_POLICY if refused else CLOSE_TRY_LATER, message[:120])
            return
        try:
            await open_session()  # the key's own limit, on every router (auth.realtime_sessions_per_key)
        except HarmonyError as exc:
            await websocket.accept()
            await _send(websocket, events.error_event(exc))
            await websocket.close(CLOSE_TRY_LATER, exc.message[:120])
            return
        await websocket.accept()
        open_sessions += 1
        gauge.inc()
        try:
            await _serve(websocket, models, metrics)
        finally:
            open_sessions -= 1
            gauge.dec()

    @api.get("/v1/realtime", include_in_schema=False)
    async def not_upgraded() -> JSONResponse:
        body = error_body("/v1/realtime is a WebSocket: connect with an Upgrade (ws:// or wss://), "
                          "?intent=transcription", "invalid_request_error", None, "upgrade_required")
        return JSONResponse(body, status_code=426, headers={"Upgrade": "websocket"})

    return api


def _wants_beta(websocket: WebSocket) -> bool:
    return "realtime=v1" in (websocket.headers.get("openai-beta") or "")


async def _send(websocket: WebSocket, event: dict[str, Any]) -> None:
    await websocket.send_text(json.dumps(event, ensure_ascii=False))


async def _serve(websocket: WebSocket, models: SessionModels, metrics: Metrics) -> None:
    lock = asyncio.Lock()

    async def send(event: dict[str, Any]) -> None:
        if websocket.application_state != WebSocketState.CONNECTED:
            return
        async with lock:
            try:
                await _send(websocket, event)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # the client is gone: the receive loop sees it and ends the session

    session = RealtimeSession(send, models, beta=_wants_beta(websocket), turn_time=metrics.realtime_turn_time)
    ends = time.monotonic() + MAX_SESSION_S
    try:
        await send(session.created())
        while True:
            left = ends - time.monotonic()
            try:
                message = await asyncio.wait_for(websocket.receive(), timeout=min(IDLE_TIMEOUT_S, max(left, 0.0)))
            except TimeoutError:
                expired = left <= IDLE_TIMEOUT_S
                reason = "the session reached its maximum duration" if expired else "the session was idle too long"
                await send(events.error_event(InvalidRequest(reason, code="session_expired" if expired
                                                             else "session_idle_timeout")))
                await websocket.close(CLOSE_NORMAL, reason)
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            try:
                if len(data) > MAX_MESSAGE_BYTES:
                    raise events.RealtimeError("the message is too large", code="message_too_large")
                await session.handle(data)
            except HarmonyError as exc:
                await send(events.error_event(exc))
    except WebSocketDisconnect:
        return
    finally:
        await session.close()
