"""GET /v1/models and /v1/models/{id}: every model, alias and route served."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import APIRouter
from pydantic import BaseModel, ValidationError

from services.core.contracts.errors import ModelNotFound
from services.core.contracts.specs import Task
from services.router.api.protocol.models import ModelList, ModelObject
from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients

PROBE_TIMEOUT_S = 2.0
RETRY_S = 5.0


class _ServiceModel(BaseModel):
    id: str
    languages: list[str] = []


class _ServiceModels(BaseModel):
    data: list[_ServiceModel] = []


class LearnedLanguages:
    """The languages of a speech-to-text model whose config declares none, as its loaded weights decide (a
    multilingual Whisper knows 100): learned once from its service's ``GET /v1/models``, asked of a ready replica
    directly (never held for a model that scaled to zero; one that did not answer is asked again after a few
    seconds, so a listing never waits on it twice in a row)."""

    def __init__(self, table: ModelTable, clients: ServiceClients) -> None:
        self.table = table
        self.clients = clients
        self.known: dict[str, list[str]] = {}
        self.asked_at: dict[str, float] = {}  # a service that did not tell is asked again after RETRY_S

    async def fill(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = time.monotonic()
        wanted = {m.name for m in self.table.models.values()
                  if m.task == Task.stt and not m.spec.languages and m.name not in self.known
                  and now - self.asked_at.get(m.name, -RETRY_S) >= RETRY_S}
        for name in wanted:
            self.asked_at[name] = now
        if wanted:
            await asyncio.gather(*(self._learn(name) for name in sorted(wanted)))
        out = []
        for entry in entries:
            name = entry.get("alias_of") or entry["id"]
            if not entry.get("languages") and name in self.known:
                entry = {**entry, "languages": self.known[name]}
            out.append(entry)
        return out

    async def _learn(self, name: str) -> None:
        for replica in self.table.models[name].replicas:
            try:
                response = await self.clients.client(replica.url).get("/v1/models", timeout=PROBE_TIMEOUT_S)
                response.raise_for_status()
                listing = _ServiceModels.model_validate_json(response.content)
            except (httpx.HTTPError, ValidationError):
                continue
            for model in listing.data:
                if model.id == name and model.languages:
                    self.known[name] = model.languages
                    return


def routes(table: ModelTable, clients: ServiceClients | None = None) -> APIRouter:
    api = APIRouter(tags=["models"])
    languages = LearnedLanguages(table, clients) if clients is not None else None

    async def entries() -> list[dict[str, Any]]:
        listed = table.public_entries()
        return await languages.fill(listed) if languages is not None else listed

    @api.get("/v1/models", response_model_exclude_unset=True)
    async def list_models() -> ModelList:
        return ModelList.model_validate({"object": "list", "data": await entries()})

    @api.get("/v1/models/{model_id:path}", response_model_exclude_unset=True)
    async def get_model(model_id: str) -> ModelObject:
        by_id = {entry["id"]: entry for entry in await entries()}
        if model_id in by_id:
            return ModelObject.model_validate(by_id[model_id])
        name = table.lookup(model_id)  # a dated snapshot of an alias
        if name is not None:
            return ModelObject.model_validate({**by_id[name], "id": model_id, "alias_of": name})
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")

    return api
