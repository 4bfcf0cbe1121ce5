"""OpenAI's Batch API: POST /v1/batches, GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel,
and GET /v1/batches/{id}/events (progress as server-sent events, an extension)."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from services.batches.area import BatchArea, owner_key_id, request_owner
from services.batches.files import Owner
from services.batches.wire import TERMINAL, BatchCreate, BatchEvent, BatchList, BatchObject
from services.core.contracts.errors import InvalidRequest

EVENT_POLL_S = 0.5


def routes(area: BatchArea, wake: asyncio.Event | None = None) -> APIRouter:
    api = APIRouter(tags=["batches"])

    @api.post("/v1/batches")
    async def create(request: Request) -> BatchObject:
        body = await _parse(request)
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

    @api.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str) -> BatchObject:
        batch = await asyncio.to_thread(area.batches.cancel, batch_id, request_owner())
        if wake is not None:
            wake.set()
        return batch

    @api.get("/v1/batches/{batch_id}/events")
    async def events(batch_id: str) -> StreamingResponse:
        owner = request_owner()
        await asyncio.to_thread(area.batches.get, batch_id, owner)  # 404 before the stream starts
        return StreamingResponse(_events(area, batch_id, owner), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return api


async def _parse(request: Request) -> BatchCreate:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the body must be JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    try:
        return BatchCreate.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or None
        message = str(error["msg"]).removeprefix("Value error, ")
        code = "missing_required_parameter" if error["type"] == "missing" else "invalid_value"
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param, code=code) from None


async def _events(area: BatchArea, batch_id: str, owner: Owner) -> AsyncIterator[bytes]:
    """One event per change of the batch (its version), the last one at a terminal status."""
    seen = -1
    while True:
        version, status = await asyncio.to_thread(area.batches.version, batch_id)
        if version != seen:
            seen = version
            batch = await asyncio.to_thread(area.batches.get, batch_id, owner)
            kind = f"batch.{batch.status}" if batch.status in TERMINAL else "batch.progress"
            yield f"data: {BatchEvent(type=kind, batch=batch).model_dump_json()}\n\n".encode()
            if batch.status in TERMINAL:
                return
        elif status in TERMINAL or version < 0:
            return
        await asyncio.sleep(EVENT_POLL_S)
