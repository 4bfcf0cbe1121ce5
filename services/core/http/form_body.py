"""A multipart request body parsed into its pydantic model by hand, with OpenAI's 400s, and its OpenAPI
description generated from the same model.

By hand, not as FastAPI's ``Form`` model, to keep what the engine answers: the multipart body read with the
engine's own field and file limits (``uploads.read_form``: ``invalid_content_type``, ``invalid_multipart``, a client
gone mid-upload), a field sent twice a 400 ``duplicate_parameter``, a file where text belongs (or text where a file
belongs) a 400 naming the field, a field read under several names (``FormKeys``: a list also as ``name[]``), and a
bad value ``core.contracts.errors.invalid_request``'s 400 naming it. Empty text fields count as absent; text is
stripped. A field the model does not define (a typo, or an OpenAI field the engine does not take) is refused by
name, ``unknown_parameter`` (``core.http.unsupported``: the server's ``ignore_unsupported`` lets it through with
a warning).
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Any, TypeVar, Union, get_args, get_origin

from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from starlette.datastructures import FormData
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.requests import Request

from services.core.contracts.errors import InvalidRequest, invalid_request
from services.core.contracts.forms import single
from services.core.http.schemas import inline_schema
from services.core.http.unsupported import refuse_unsupported
from services.core.http.uploads import read_form

M = TypeVar("M", bound="FormModel")


class FormKeys:
    """Field metadata (``Annotated[..., FormKeys("file", "files")]``): the multipart names a field is read from,
    the first being the one errors name."""

    def __init__(self, *keys: str) -> None:
        self.keys = keys


class FormObject:
    """Field metadata (``Annotated[str | None, FormObject()]``): a JSON object field that clients also send in
    parts, ``name[key]=value`` (as OpenAI's SDK sends ``chunking_strategy``); the parts arrive as the JSON text
    of their object (values as strings)."""


class FormModel(BaseModel):
    """Base of every multipart request body: text, number and boolean fields, and ``UploadFile`` fields."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, populate_by_name=True)

    @classmethod
    async def read(cls: type[M], request: Request, *, max_fields: int = 64, max_files: int = 16) -> M:
        """The request's multipart body as this model (a 400 naming the field that is wrong)."""
        return parse_form(await read_form(request, max_fields=max_fields, max_files=max_files), cls)


def parse_form(form: FormData, model: type[M]) -> M:
    """``form``'s fields as ``model`` (each read under its ``FormKeys`` or its alias); a 400 naming the first field
    that is wrong, in the model's order (a missing file as such: upload the audio as a file field)."""
    known, objects = _known_keys(model), _objects(model)
    for key in dict.fromkeys(form.keys()):
        if key not in known and not (key.startswith(objects) and key.endswith("]")):
            refuse_unsupported(key[:64], f"Unrecognized request argument supplied: {key[:64]}",
                               code="unknown_parameter")
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        value = _value(form, name, field)
        if value is not None:
            data[field.alias or name] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        failed = model.model_fields.get(str(first["loc"][0])) if first["loc"] else None
        if first["type"] == "missing" and failed is not None and _is_file(failed.annotation):
            key = str(first["loc"][0])
            raise InvalidRequest(f"'{key}' is required: upload the audio as a file field", param=key,
                                 code="missing_required_parameter") from None
        raise invalid_request(exc.errors()) from None


def _keys(name: str, field: FieldInfo) -> tuple[str, ...]:
    return next((m.keys for m in field.metadata if isinstance(m, FormKeys)), (field.alias or name,))


def _known_keys(model: type[FormModel]) -> set[str]:
    """Every multipart name ``model`` reads (a list field also as ``name[]``)."""
    known: set[str] = set()
    for name, field in model.model_fields.items():
        for key in _keys(name, field):
            known.add(key)
            if _is_list(field.annotation):
                known.update((key.removesuffix("[]"), key.removesuffix("[]") + "[]"))
    return known


def _objects(model: type[FormModel]) -> tuple[str, ...]:
    return tuple(f"{key}[" for name, field in model.model_fields.items()
                 if any(isinstance(m, FormObject) for m in field.metadata) for key in _keys(name, field))


def _value(form: FormData, name: str, field: FieldInfo) -> Any:
    keys = _keys(name, field)
    is_file, is_list = _is_file(field.annotation), _is_list(field.annotation)
    if is_list:
        names = list(dict.fromkeys(k for key in keys for k in (key, key.removesuffix("[]") + "[]")))
        values = [v for key in names for v in form.getlist(key)]
        wanted = [v for v in values if isinstance(v, StarletteUpload) == is_file]
        if not wanted and values:
            raise InvalidRequest(_wrong_kind(keys[0], is_file), param=keys[0])
        text = [v.strip() for v in wanted if isinstance(v, str)]
        return (wanted if is_file else [v for v in text if v]) or None
    value = next((v for v in (single(form, key) for key in keys) if v is not None), None)
    if value is None and any(isinstance(m, FormObject) for m in field.metadata):
        parts = {k[len(keys[0]) + 1:-1]: single(form, k) for k in form.keys()
                 if k.startswith(keys[0] + "[") and k.endswith("]")}
        if parts:
            if not all(isinstance(v, str) for v in parts.values()):
                raise InvalidRequest(_wrong_kind(keys[0], False), param=keys[0])
            return json.dumps({k: v.strip() for k, v in parts.items()})  # type: ignore[union-attr]
    if value is None:
        return None
    if isinstance(value, StarletteUpload) != is_file:
        raise InvalidRequest(_wrong_kind(keys[0], is_file), param=keys[0])
    if isinstance(value, str):
        return value.strip() or None
    return value


def _wrong_kind(key: str, is_file: bool) -> str:
    return f"'{key}' must be a file upload" if is_file else f"'{key}' must be a plain field, not a file"


def _flat(annotation: Any) -> Iterator[Any]:
    yield annotation
    if get_origin(annotation) in (Union, types.UnionType, list):
        for arg in get_args(annotation):
            yield from _flat(arg)


def _is_file(annotation: Any) -> bool:
    return any(isinstance(a, type) and issubclass(a, StarletteUpload) for a in _flat(annotation))


def _is_list(annotation: Any) -> bool:
    return any(get_origin(a) is list for a in _flat(annotation))


def form_request_body(model: type[FormModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads ``model``: a required multipart body, its schema from the model."""
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": _multipart(inline_schema(model))}}}}


def _multipart(node: Any) -> Any:
    """A schema as multipart can carry it: a file is ``format: binary`` (what OpenAPI 3.0 tools read), and an
    absent field is left out, so an optional field's ``null`` alternative goes."""
    if isinstance(node, list):
        return [_multipart(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _multipart(value) for key, value in node.items()}
    if node.pop("contentMediaType", None) is not None:
        node["format"] = "binary"
    options = [o for o in node.get("anyOf", []) if o != {"type": "null"}]
    if "anyOf" in node and len(options) == 1:
        del node["anyOf"]
        node = {**options[0], **node}
    if node.get("default", "") is None:
        del node["default"]
    return node


__all__ = ["FormKeys", "FormModel", "FormObject", "UploadFile", "form_request_body", "parse_form"]
