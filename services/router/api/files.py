"""OpenAI's Files API: POST /v1/files, GET /v1/files, GET and DELETE /v1/files/{id}, GET /v1/files/{id}/content."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from services.batches.area import BatchArea, owner_key_id, request_owner
from services.batches.filenames import content_disposition
from services.batches.wire import UPLOAD_PURPOSES, FileDeleted, FileList, FileObject
from services.core.http.byte_ranges import byte_range
from services.core.contracts.errors import InvalidRequest
from services.core.http.uploads import form_str, form_upload, read_form
from services.store.objects import ObjectChunks
from starlette.concurrency import iterate_in_threadpool

MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400  # OpenAI's bounds of expires_after[seconds]


def routes(area: BatchArea) -> APIRouter:
    api = APIRouter(tags=["files"])

    @api.post("/v1/files")
    async def create(request: Request) -> FileObject:
        form = await read_form(request, max_files=1)
        purpose = form_str(form, "purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(f"'purpose' must be one of {', '.join(UPLOAD_PURPOSES)}, not {purpose!r}",
                                 param="purpose", code="missing_required_parameter" if purpose is None else None)
        expires_after_s = _expires_after(form_str(form, "expires_after[anchor]"),
                                         form_str(form, "expires_after[seconds]"), area.config.files.expires_after_s)
        upload = form_upload(form)  # spooled to disk past 1 MB, and copied to the store from there in chunks
        return await asyncio.to_thread(area.files.create_from, upload.file, upload.filename or "file", purpose,
                                       owner_key_id(), expires_after_s)

    @api.get("/v1/files")
    async def list_files(purpose: str | None = None, limit: int = Query(10000, ge=1, le=10000),
                         after: str | None = None, order: Literal["asc", "desc"] = "desc") -> FileList:
        return await asyncio.to_thread(area.files.list, request_owner(), purpose, limit, after, order)

    @api.get("/v1/files/{file_id}")
    async def retrieve(file_id: str) -> FileObject:
        return await asyncio.to_thread(area.files.get, file_id, request_owner())

    @api.delete("/v1/files/{file_id}")
    async def delete(file_id: str) -> FileDeleted:
        await asyncio.to_thread(area.files.delete, file_id, request_owner())
        return FileDeleted(id=file_id)

    @api.get("/v1/files/{file_id}/content")
    async def content(file_id: str, request: Request) -> StreamingResponse:
        """The bytes, streamed from the store a chunk at a time; one ``Range`` is served as a 206."""
        owner, header = request_owner(), request.headers.get("range")
        record = await asyncio.to_thread(area.files.get, file_id, owner)
        wanted = byte_range(header, record.bytes)
        start, length = (0, None) if wanted is None else (wanted[0], wanted[1] - wanted[0] + 1)
        record, chunks = await asyncio.to_thread(area.files.stream, file_id, owner, start, length)
        media = "application/jsonl" if record.filename.endswith(".jsonl") else "application/octet-stream"
        headers = {"Content-Disposition": content_disposition(record.filename), "Accept-Ranges": "bytes",
                   "Content-Length": str(record.bytes if length is None else length)}
        if wanted is not None:
            headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{record.bytes}"
        return StreamingResponse(_streamed(chunks), status_code=200 if wanted is None else 206, media_type=media,
                                 headers=headers)

    return api


async def _streamed(chunks: ObjectChunks) -> AsyncIterator[bytes]:
    """Each chunk read in a worker thread; the file or S3 connection let go however the response ends (a client
    that leaves included: the read under way finishes first, then the close)."""
    try:
        async for chunk in iterate_in_threadpool(chunks):
            yield chunk
    finally:
        chunks.close()


def _expires_after(anchor: str | None, seconds: str | None, default_s: int) -> int:
    """OpenAI's ``expires_after``: anchor ``created_at`` and 3600 to 2592000 seconds; else the configured expiry."""
    if anchor is None and seconds is None:
        return default_s
    if anchor != "created_at":
        raise InvalidRequest("'expires_after[anchor]' must be 'created_at'", param="expires_after.anchor")
    if seconds is None or not seconds.strip().isdigit() or not MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S:
        raise InvalidRequest(f"'expires_after[seconds]' must be a whole number from {MIN_EXPIRY_S} to {MAX_EXPIRY_S}",
                             param="expires_after.seconds")
    return int(seconds)
