"""Typed errors, rendered once in OpenAI's error shape by every app."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("harmony.errors")


class HarmonyError(Exception):
    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def to_body(self) -> dict[str, Any]:
        return error_body(self.message, self.error_type, self.param, self.code)


class InvalidRequest(HarmonyError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidAudio(InvalidRequest):
    default_code = "invalid_audio"


class ModelNotFound(HarmonyError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class NotFound(HarmonyError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class PayloadTooLarge(HarmonyError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "file_too_large"


class QueueFull(HarmonyError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "queue_full"


class ServiceUnavailable(HarmonyError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "model_unavailable"


class RequestTimeout(HarmonyError):
    status_code = 504
    error_type = "timeout_error"
    default_code = "timeout"


class InferenceError(HarmonyError):
    status_code = 500
    error_type = "server_error"
    default_code = "inference_failed"


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_from_body(status_code: int, body: Any, headers: Any = None) -> HarmonyError:
    """Rebuild a typed error from a model service's OpenAI-shaped error answer."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        err = {}
    code = err.get("code")
    message = err.get("message") or f"model service answered {status_code}"
    cls: type[HarmonyError] = {
        400: InvalidAudio if code == "invalid_audio" else InvalidRequest,
        404: ModelNotFound if code == "model_not_found" else NotFound,
        413: PayloadTooLarge,
        429: QueueFull,
        503: ServiceUnavailable,
        504: RequestTimeout,
    }.get(status_code, InferenceError)
    exc = cls(message, param=err.get("param"), code=code)
    if cls is InferenceError or (cls is InvalidRequest and status_code != 400):
        exc.status_code = status_code if status_code >= 400 else 502
    retry_after = headers.get("retry-after") if headers is not None else None
    if retry_after:
        exc.headers = {"Retry-After": retry_after}
    return exc


_STATUS_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HarmonyError)
    async def _harmony(_: Request, exc: HarmonyError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        message = f"{param}: {first['msg']}" if param else str(first["msg"])
        return JSONResponse(error_body(message, "invalid_request_error", param, "invalid_value"), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "server_error" if exc.status_code >= 500 else "invalid_request_error")
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", None, "internal_error"),
                            status_code=500)
