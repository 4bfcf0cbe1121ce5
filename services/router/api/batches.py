"""OpenAI's Batch API: POST /v1/batches, GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel,
and GET /v1/batches/{id}/events (progress as server-sent events, an extension)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from services.batches.area import BatchArea, owner_key_id, request_owner
from services.batches.files import Owner
from services.batches.wire import TERMINAL
from services.core.http.json_body import json_request_body, parse_json_body
from services.core.http.sse import MEDIA_TYPE, sse_frame
from services.router.api.protocol.batches import BatchCancel, BatchCreate, BatchEvent, BatchList, BatchObject

EVENT_POLL_S = 0.5
EVENTS: dict[int | str, dict[str, Any]] = {
    200: {"description": "BatchEvent frames", "content": {MEDIA_TYPE: {"schema": {"type": "string"}}}}}


def routes(area: BatchArea, wake: asyncio.Event | None = None) -> APIRouter:
    api = APIRouter(tags=["batches"])

    @api.post("/v1/batches", openapi_extra=json_request_body(BatchCreate))
    async def create(request: Request) -> BatchObject:
        body = await parse_json_body(request, BatchCreate)
        batch = await asyncio.to_thread(area.batches.create, body, request_owner(), owner_key_id())
        if wake is not None:
            wake.set()  # validate it now, not at the runner's next look
        return batch

    @api.get("/v1/batches")
    async def list_batches(limit: int = Query(20, ge=1, le=100), after: str | None = None) -> BatchList:
        return await asyncio.to_thread(area.batches.list, request_owner(), limit, after)

    @api.get("/v1/batches/{batch_id}")
    async def retrieve(batch_id: str) -> BatchObject:
        return await asyncio.to_thread(area.batches.get, batch_id, request_owner())

    @api.post("/v1/batches/{batch_id}/cancel", openapi_extra=json_request_body(BatchCancel, required=False))
    async def cancel(batch_id: str) -> BatchObject:
        batch = await asyncio.to_thread(area.batches.cancel, batch_id, request_owner())
        if wake is not None:
            wake.set()
        return batch

    @api.get("/v1/batches/{batch_id}/events", response_class=StreamingResponse, responses=EVENTS)
    async def events(batch_id: str) -> StreamingResponse:
        owner = request_owner()
        await asyncio.to_thread(area.batches.get, batch_id, owner)  # 404 before the stream starts
        return StreamingResponse(_events(area, batch_id, owner), media_type=MEDIA_TYPE,
                                 headers={"Cache-Control": "no-cache"})

    return api


async def _events(area: BatchArea, batch_id: str, owner: Owner) -> AsyncIterator[bytes]:
    """One event per change of the batch (its version), the last one at a terminal status."""
    seen = -1
    while True:
        version, status = await asyncio.to_thread(area.batches.version, batch_id)
        if version != seen:
            seen = version
            batch = await asyncio.to_thread(area.batches.get, batch_id, owner)
            kind = f"batch.{batch.status}" if batch.status in TERMINAL else "batch.progress"
            yield sse_frame(BatchEvent(type=kind, batch=batch), omit_none=False)
            if batch.status in TERMINAL:
                return
        elif status in TERMINAL or version < 0:
            return
        await asyncio.sleep(EVENT_POLL_S)
