"""Typed errors, rendered once in OpenAI's error shape by every app.

The error ``type`` follows the HTTP status, one table for every app (``OPENAI_TYPES``), with only
the types OpenAI's API answers:

=====================================  ==========================  ==========================================
status                                 type                        examples (code)
=====================================  ==========================  ==========================================
400, 404, 405, 409, 413, 415, 422,     ``invalid_request_error``   invalid_value, invalid_audio, model_not_found,
any other 4xx                                                      file_too_large
401                                    ``authentication_error``    invalid_api_key
403                                    ``permission_error``
429                                    ``rate_limit_error``        queue_full, rate_limit_exceeded (Retry-After)
429 (an API key's quota is spent)      ``insufficient_quota``      insufficient_quota (as OpenAI answers it)
500, 502, 503, 504, any other 5xx      ``server_error``            inference_failed, upstream_error,
                                                                   model_unavailable, timeout
=====================================  ==========================  ==========================================

The ``code`` tells the cases apart. A deterministic failure (any 4xx except 408, 409 and 429) also
carries ``x-should-retry: false``, which the openai SDKs obey: sending the same request again cannot
succeed. An error a model service answered keeps its status, type and code through the router.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
RETRYABLE_4XX = frozenset({408, 409, 429})


def openai_type(status: int) -> str:
    """The OpenAI error type of an HTTP status (the table in this module's docstring)."""
    return OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def error_headers(status: int, headers: dict[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``x-should-retry: false`` for a deterministic failure."""
    out = dict(headers or {})
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        out.setdefault("x-should-retry", "false")
    return out


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

    def response_headers(self) -> dict[str, str]:
        return error_headers(self.status_code, self.headers)


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
    error_type = "server_error"
    default_code = "model_unavailable"


class RequestTimeout(HarmonyError):
    status_code = 504
    error_type = "server_error"
    default_code = "timeout"


class InferenceError(HarmonyError):
    status_code = 500
    error_type = "server_error"
    default_code = "inference_failed"


class UpstreamError(HarmonyError):
    """A model service's connection broke, or it answered something that is not its contract."""

    status_code = 502
    error_type = "server_error"
    default_code = "upstream_error"


def error_body(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


_BY_STATUS: dict[int, type[HarmonyError]] = {
    400: InvalidRequest, 404: NotFound, 413: PayloadTooLarge, 429: QueueFull, 500: InferenceError,
    502: UpstreamError, 503: ServiceUnavailable, 504: RequestTimeout}


def error_from_body(status_code: int, body: Any, headers: Any = None) -> HarmonyError:
    """Rebuild a typed error from a model service's OpenAI-shaped error answer: status, type and code kept."""
    err = body.get("error", {}) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        err = {}
    code = err.get("code")
    message = err.get("message") or f"model service answered {status_code}"
    status = status_code if 400 <= status_code < 600 else 502
    cls = _BY_STATUS.get(status, HarmonyError)
    if code == "invalid_audio":
        cls = InvalidAudio
    elif code == "model_not_found":
        cls = ModelNotFound
    exc = cls(message, param=err.get("param"), code=code)
    exc.status_code = status
    exc.error_type = openai_type(status)
    retry_after = headers.get("retry-after") if headers is not None else None
    if retry_after:
        exc.headers = {"Retry-After": retry_after}
    return exc


WHERE = ("body", "query", "path", "header")  # FastAPI's first element of a location: not part of the field's name


def invalid_request(errors: Sequence[Any], values: Mapping[str, str] | None = None) -> InvalidRequest:
    """The 400 of a failed validation (pydantic's ``ValidationError.errors()`` or FastAPI's): its first error, with
    the field it names as ``param`` (``a.b`` for a nested one), ``missing_required_parameter`` for an absent field
    and ``invalid_value`` for a bad one; the value sent is quoted when ``values`` (the raw fields) has it. The one
    translation of a validation failure into OpenAI's 400, for the public API and the model services alike."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "value_error"}
    param = ".".join(str(p) for p in first.get("loc", ()) if p not in WHERE) or None
    text = str(first["msg"]).removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
    code = "missing_required_parameter" if first.get("type") == "missing" else "invalid_value"
    message = f"{param}: {text}" if param else text
    if values is not None and param is not None and param in values:
        message += f", not '{values[param]}'"
    return InvalidRequest(message, param=param, code=code)
