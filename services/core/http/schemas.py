"""A pydantic model's JSON schema as one self-contained object, for a route's ``openapi_extra``.

FastAPI lists the models of its own parameters under ``components``; a schema given in ``openapi_extra`` cannot
add to them, so its ``$defs`` are written in place."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s validation schema with every ``$ref`` to its ``$defs`` replaced by the definition."""
    schema = model.model_json_schema(mode="validation")
    defs = schema.pop("$defs", {})
    return _inlined(schema, defs)


def _inlined(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inlined(defs[ref.removeprefix("#/$defs/")], defs), **_inlined(rest, defs)}
        return {key: _inlined(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inlined(item, defs) for item in node]
    return node
