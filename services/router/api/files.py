"""OpenAI's Files API: POST /v1/files, GET /v1/files, GET and DELETE /v1/files/{id}, GET /v1/files/{id}/content."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from services.batches.area import BatchArea, owner_key_id, request_owner
from services.batches.filenames import content_disposition
from services.core.http.byte_ranges import byte_range
from services.core.http.form_body import form_request_body
from services.router.api.protocol.files import FileDeleted, FileList, FileObject, FileUploadForm
from services.store.objects import ObjectChunks

CONTENT: dict[int | str, dict[str, Any]] = {200: {"description": "The file's bytes (206 for one Range)",
                 "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                             "application/jsonl": {"schema": {"type": "string"}}}}}


def routes(area: BatchArea) -> APIRouter:
    api = APIRouter(tags=["files"])

    @api.post("/v1/files", openapi_extra=form_request_body(FileUploadForm))
    async def create(request: Request) -> FileObject:
        form = await FileUploadForm.read(request, max_files=1)
        upload = form.file  # spooled to disk past 1 MB, and copied to the store from there in chunks
        return await asyncio.to_thread(area.files.create_from, upload.file, upload.filename or "file", form.purpose,
                                       owner_key_id(), form.expires_after_s(area.config.files.expires_after_s))

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

    @api.get("/v1/files/{file_id}/content", response_class=StreamingResponse, responses=CONTENT)
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
