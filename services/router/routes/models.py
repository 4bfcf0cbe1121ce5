"""GET /v1/models and /v1/models/{id}: every model, alias and route served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from services.core.errors import ModelNotFound
from services.router.routing import ModelTable


def routes(table: ModelTable) -> APIRouter:
    api = APIRouter(tags=["models"])

    @api.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": table.public_entries()}

    @api.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        entries = {entry["id"]: entry for entry in table.public_entries()}
        if model_id in entries:
            return entries[model_id]
        name = table.lookup(model_id)  # a dated snapshot of an alias
        if name is not None:
            return {**entries[name], "id": model_id, "alias_of": name}
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")

    return api
