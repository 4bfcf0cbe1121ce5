"""GET / (the playground page), its static files under /playground/static, and two small JSON helpers:
/playground/features.json (what this server offers the page) and /playground/metrics (the models' figures)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.routing import BaseRoute, Match

from services.playground.model_metrics import ModelFigures, gather
from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/playground"
REALTIME_PATH = "/v1/realtime"
NO_CACHE = {"Cache-Control": "no-cache"}  # revalidated each load: an upgraded engine's page is never stale


class Features(BaseModel):
    """What the page may use: the real-time endpoint (a live transcript while recording), API keys."""

    realtime: bool
    auth_required: bool


class ModelMetrics(BaseModel):
    object: str = "playground.metrics"
    models: dict[str, ModelFigures]


def has_websocket(routes: list[BaseRoute], path: str) -> bool:
    """Whether a WebSocket route takes ``path`` (asked through ``matches``: included routers nest their routes)."""
    probe = {"type": "websocket", "path": path, "root_path": "", "query_string": b"", "headers": []}
    return any(route.matches(probe)[0] == Match.FULL for route in routes)


def install(app: FastAPI, table: ModelTable, clients: ServiceClients, auth_required: bool) -> None:
    """Add the playground to the router ``app`` (after its API routes: they keep every path they had)."""
    api = APIRouter(include_in_schema=False)

    @api.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=NO_CACHE)

    @api.get(PREFIX + "/features.json")
    async def features() -> Features:
        return Features(realtime=has_websocket(app.router.routes, REALTIME_PATH), auth_required=auth_required)

    @api.get(PREFIX + "/metrics")
    async def model_metrics() -> ModelMetrics:
        return ModelMetrics(models=await gather(table, clients))

    app.include_router(api)
    app.mount(PREFIX + "/static", StaticFiles(directory=STATIC), name="playground")
