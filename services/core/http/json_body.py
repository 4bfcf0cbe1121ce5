"""A JSON request body parsed into its pydantic model by hand, with OpenAI's 400s, and its OpenAPI description.

By hand, not as a FastAPI body parameter, for the errors FastAPI would not give: ``invalid_json`` for a body that
is no JSON object, nor valid Unicode text (a lone UTF-16 surrogate), nor shallow enough to parse; a bad field is
``core.http.errors.invalid_request``'s 400 naming it; a field the model does not define is refused by name
(``unknown_parameter``; ``core.http.unsupported``), unless the model takes any (``extra="allow"``).
``json_request_body`` publishes the schema generated from the same model, for the route's ``openapi_extra``."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from services.core.contracts.errors import InvalidRequest, invalid_request
from services.core.http.schemas import inline_schema
from services.core.http.unsupported import refuse_unsupported

M = TypeVar("M", bound=BaseModel)


async def parse_json_body(request: Request, model: type[M]) -> M:
    """The body as ``model``; a 400 ``invalid_json`` or one naming the bad field."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InvalidRequest("the body must be JSON", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be a JSON object", code="invalid_json")
    check_unicode(data)
    data = _known_only(data, model)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def _known_only(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """``data`` without the fields ``model`` does not define, each refused by name first (let through, and left
    out, only under ``ignore_unsupported``)."""
    if model.model_config.get("extra") == "allow":
        return data
    known = {key for name, field in model.model_fields.items() for key in (name, field.alias) if key}
    unknown = [key for key in data if key not in known]
    for key in unknown:
        refuse_unsupported(key[:64], f"Unrecognized request argument supplied: {key[:64]}", code="unknown_parameter")
    return {key: value for key, value in data.items() if key not in unknown}


def check_unicode(data: dict[str, Any]) -> None:
    """A lone surrogate (``"\\ud800"``) is valid JSON but no text: it could not be sent on, stored nor spoken."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("the body holds a lone UTF-16 surrogate escape: not valid Unicode text",
                             code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply", code="invalid_json") from None


def json_request_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads ``model`` with ``parse_json_body``: its JSON request body (one that
    is not ``required`` may be left out: a body of no fields, as OpenAI's cancel)."""
    return {"requestBody": {"required": required,
                            "content": {"application/json": {"schema": inline_schema(model)}}}}
