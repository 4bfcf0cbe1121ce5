"""A batch's input file, checked line by line (pure): OpenAI's line shape, the batch's endpoint, unique ids.

A malformed line fails the whole batch with OpenAI's ``errors`` object naming the line; what a request's body
holds is checked when it runs, by the endpoint itself, so a bad request fails alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.batches.wire import BatchError, BatchErrors, InputLine

MAX_REPORTED = 100  # errors named in one failed validation


@dataclass(frozen=True)
class Request:
    line: int
    custom_id: str
    body: dict[str, Any]


def _line_error(number: int, text: str, endpoint: str) -> tuple[BatchError | None, InputLine | None]:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return BatchError(code="invalid_json_line", line=number,
                          message=f"line {number} is not valid JSON"), None
    if not isinstance(data, dict):
        return BatchError(code="invalid_request", line=number,
                          message=f"line {number} must be a JSON object"), None
    try:
        request = InputLine.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        param = ".".join(str(p) for p in error["loc"]) or None
        code = "missing_required_parameter" if error["type"] == "missing" else "invalid_request"
        if param == "method":
            code = "invalid_method"
        return BatchError(code=code, line=number, param=param,
                          message=f"line {number}: {param}: {error['msg']}" if param else error["msg"]), None
    if request.url != endpoint:
        return BatchError(code="mismatched_url", line=number, param="url",
                          message=f"line {number}: url '{request.url}' is not the batch's endpoint '{endpoint}'"), None
    return None, request


def check_lines(data: bytes, endpoint: str, max_lines: int) -> tuple[list[Request], BatchErrors | None]:
    """The requests of an input file, or the errors that fail its batch (each naming its 1-based line)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], BatchErrors(data=[BatchError(code="invalid_file", message="the input file is not UTF-8 text")])
    lines = text.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        return [], BatchErrors(data=[BatchError(code="empty_file", message="the input file has no requests")])
    if len(numbered) > max_lines:
        return [], BatchErrors(data=[BatchError(
            code="too_many_requests", line=numbered[max_lines][0],
            message=f"the input file has {len(numbered)} requests; a batch holds at most {max_lines}")])
    requests: list[Request] = []
    errors: list[BatchError] = []
    seen: dict[str, int] = {}  # custom_id -> the line that used it first
    for number, line in numbered:
        error, request = _line_error(number, line, endpoint)
        if request is not None and request.custom_id in seen:
            error = BatchError(code="duplicate_custom_id", line=number, param="custom_id",
                               message=f"line {number}: custom_id '{request.custom_id}' is already used on line "
                                       f"{seen[request.custom_id]}")
        if error is not None:
            errors.append(error)
        elif request is not None:
            seen[request.custom_id] = number
            requests.append(Request(number, request.custom_id, request.body))
    if errors:
        return [], BatchErrors(data=errors[:MAX_REPORTED])
    return requests, None
