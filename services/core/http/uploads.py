"""Upload size limits and multipart parsing with OpenAI-shaped errors."""

from __future__ import annotations

import math
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.contracts.errors import (
    HarmonyError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    error_body,
)
from services.core.contracts.forms import single
from services.core.http.disconnect import ClientDisconnected


class SpoolBudget:
    """The bytes of request bodies a server holds at once (in memory, or spooled to its ``/tmp`` past 1 MB a file).

    Each body reserves its declared length (a chunked one, its path's limit) until its request has ended: held
    uploads included (a model scaled to zero, a full queue), so the router's bounded ``/tmp`` never fills and the
    kubelet never evicts the pod. A body that does not fit is refused at once, 503 ``spool_full`` with a
    ``Retry-After``, before any of it is read; one body alone always fits (it is bounded by its own limit).
    ``max_bytes`` 0: no budget.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.reserved = 0

    def take(self, size: int) -> bool:
        if self.max_bytes and self.reserved and self.reserved + size > self.max_bytes:
            return False
        self.reserved += size
        return True

    def give(self, size: int) -> None:
        self.reserved -= size


class UploadLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413 before they are read into memory.

    A declared Content-Length over the limit is refused at once; a body without
    one (chunked) is counted as it arrives and cut off at the limit. ``path_limits`` gives
    some paths a limit of their own (``POST /v1/files``: ``files.max_bytes``). With a ``budget``, a body that
    does not fit in what the server may hold at once is refused with 503 (:class:`SpoolBudget`).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None,
                 budget: SpoolBudget | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_bytes)
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        length = int(declared) if declared is not None and declared.isascii() and declared.isdigit() else None
        if length is not None and length > limit:
            await _send_error(send, _too_large(limit))
            return
        held = limit if length is None else length
        if self.budget is not None and not self.budget.take(held):
            await _send_error(send, _spool_full(self.budget))
            return
        try:
            await self._counted(scope, receive, send, limit)
        finally:
            if self.budget is not None:
                self.budget.give(held)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, counted, send)


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is larger than the limit of {max_bytes} bytes ({max_bytes / 1e6:.1f} MB)",
                           param="file")


def _spool_full(budget: SpoolBudget) -> ServiceUnavailable:
    return ServiceUnavailable(f"the server holds as many request bodies as it may at once ({budget.max_bytes} bytes "
                              "of uploads in progress); retry shortly", code="spool_full",
                              headers={"Retry-After": "1"})


async def _send_error(send: Send, error: HarmonyError) -> None:
    import json

    body = json.dumps(error.to_body()).encode()
    extra = [(k.encode(), v.encode()) for k, v in error.response_headers().items()]
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, max_fields: int = 64, max_files: int = 16) -> FormData:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidRequest("expected a multipart/form-data body", param=None, code="invalid_content_type")
    try:
        return await request.form(max_files=max_files, max_fields=max_fields)
    except MultiPartException as exc:
        raise InvalidRequest(f"malformed multipart body: {exc.message}", code="invalid_multipart") from None
    except StarletteHTTPException as exc:
        raise InvalidRequest(f"malformed request body: {exc.detail}", code="invalid_multipart") from None
    except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing to log as a crash
        raise ClientDisconnected("the client closed the connection during the upload") from None
    except HarmonyError:
        raise


def form_str(form: FormData, name: str, default: str | None = None) -> str | None:
    value = single(form, name)
    if value is None:
        return default
    if isinstance(value, UploadFile):
        raise InvalidRequest(f"'{name}' must be a plain field, not a file", param=name)
    return value


def form_list(form: FormData, name: str) -> list[str]:
    values: list[Any] = form.getlist(name) + form.getlist(name + "[]")
    return [v for v in values if isinstance(v, str)]


def parse_bool(value: str | None, name: str, default: bool = False) -> bool:
    """A boolean form field: true/1/yes/on or false/0/no/off; anything else is a 400 naming the field."""
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise InvalidRequest(f"'{name}' must be true or false, not '{value}'", param=name)


def parse_number(value: str | None, name: str, default: float, lo: float, hi: float,
                 low_inclusive: bool = True) -> float:
    """A numeric form field within [lo, hi] (or (lo, hi] when not ``low_inclusive``); NaN and junk are 400s."""
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a number, not '{value}'", param=name) from None
    if math.isnan(number) or number > hi or number < lo or (number == lo and not low_inclusive):
        bound = f"between {lo:g} and {hi:g}" if math.isfinite(hi) else f"greater than {lo:g}"
        raise InvalidRequest(f"'{name}' must be {bound}, not '{value}'", param=name)
    return number


async def form_file(form: FormData, name: str = "file") -> tuple[bytes, str]:
    value = form_upload(form, name)
    data = await value.read()
    return data, value.filename or "audio"


def form_upload(form: FormData, name: str = "file") -> UploadFile:
    """The file field ``name``, still spooled (to disk past 1 MB), for a caller that copies it in chunks."""
    value = single(form, name)
    if value is None:
        raise InvalidRequest(f"'{name}' is required: upload the audio as a file field", param=name,
                             code="missing_required_parameter")
    if not isinstance(value, UploadFile):
        raise InvalidRequest(f"'{name}' must be a file upload", param=name)
    return value


__all__ = ["UploadLimitMiddleware", "read_form", "single", "form_str", "form_list", "form_file", "form_upload",
           "error_body"]
