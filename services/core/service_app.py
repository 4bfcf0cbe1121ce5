"""The generic model service: a FastAPI app around loaded models, each behind its own batcher.

Every service answers ``/healthz`` (the process lives), ``/readyz`` (every model is
loaded), ``/metrics`` and ``/v1/models``; the task-specific routes come from the
task's own module.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, Callable, Protocol

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from services.core.batching import DynamicBatcher
from services.core.errors import ModelNotFound, ServiceUnavailable, install_error_handlers
from services.core.metrics import Metrics
from services.core.specs import NamedModel
from services.core.uploads import UploadLimitMiddleware

log = logging.getLogger("harmony.service")


class Backend(Protocol):
    """What every backend offers, whatever its task: load once, then run batches (blocking, in a worker thread)."""

    name: str
    task: str

    def load(self) -> None: ...

    def run_batch(self, items: list[Any]) -> list[Any]: ...


class LoadedModel:
    """One model of a service: its spec, its backend and its batcher."""

    def __init__(self, spec: NamedModel, backend: Backend, metrics: Metrics) -> None:
        self.spec = spec
        self.backend = backend
        self.metrics = metrics
        self.batcher: DynamicBatcher = DynamicBatcher(spec.name, backend.run_batch, spec.batching, metrics)
        self.ready = False
        self.error: str | None = None

    async def load(self) -> None:
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.backend.load)
        except Exception as exc:  # noqa: BLE001 - reported on /readyz and in the log
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loading %s failed", self.spec.name)
            return
        self.metrics.model_load_time.labels(self.spec.name).set(time.monotonic() - started)
        self.batcher.start()
        self.ready = True

    def describe(self) -> dict[str, Any]:
        return {"id": self.spec.name, "object": "model", "owned_by": "harmony", "task": self.spec.task.value,
                "backend": self.spec.backend, "aliases": self.spec.aliases, "ready": self.ready,
                "languages": getattr(self.backend, "languages", self.spec.languages)}


class ModelRegistry:
    def __init__(self) -> None:
        self.models: dict[str, LoadedModel] = {}

    def add(self, model: LoadedModel) -> None:
        self.models[model.spec.name] = model
        for alias in model.spec.aliases:
            self.models.setdefault(alias, model)

    def unique(self) -> list[LoadedModel]:
        return list({id(m): m for m in self.models.values()}.values())

    def get(self, name: str | None) -> LoadedModel:
        if not name:
            models = self.unique()
            if len(models) == 1:
                model = models[0]
            else:
                raise ModelNotFound("'model' is required: this service serves "
                                    + ", ".join(m.spec.name for m in models), param="model")
        else:
            model = self.models.get(name)
            if model is None:
                raise ModelNotFound(f"model '{name}' is not served here", param="model")
        if not model.ready:
            raise ServiceUnavailable(f"model '{model.spec.name}' is not loaded yet" +
                                     (f" (load failed: {model.error})" if model.error else ""))
        return model


def create_service_app(component: str, registry: ModelRegistry, metrics: Metrics, routes: list[APIRouter],
                       max_upload_bytes: int = 25 * 1024 * 1024) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.gather(*(m.load() for m in registry.unique()))
        yield
        await asyncio.gather(*(m.batcher.stop() for m in registry.unique()))

    app = FastAPI(title=f"Harmony {component} service", lifespan=lifespan)
    app.state.registry = registry
    app.state.metrics = metrics
    install_error_handlers(app)
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_upload_bytes)
    app.include_router(metrics.router())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        models = {m.spec.name: ("ready" if m.ready else (m.error or "loading")) for m in registry.unique()}
        ready = all(m.ready for m in registry.unique())
        return JSONResponse({"status": "ready" if ready else "not ready", "models": models},
                            status_code=200 if ready else 503)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in registry.unique()]}

    for router in routes:
        app.include_router(router)
    return app


def load_backend(backends: dict[str, str], spec: NamedModel) -> Backend:
    """Instantiate the backend class named by ``backends[spec.backend]`` ("module:Class"), unloaded."""
    try:
        module, cls = backends[spec.backend].split(":")
    except KeyError:
        raise ValueError(f"unknown {spec.task.value} backend '{spec.backend}'; known: {', '.join(backends)}") \
            from None
    return getattr(importlib.import_module(module), cls)(spec)


def build_service(component: str, models: list[NamedModel], backends: dict[str, str],
                  routes: Callable[[ModelRegistry, Metrics], APIRouter],
                  max_upload_bytes: int = 25 * 1024 * 1024) -> FastAPI:
    """A model service for ``models``: each behind its batcher, with the task's ``routes``."""
    metrics = Metrics(component)
    registry = ModelRegistry()
    for spec in models:
        registry.add(LoadedModel(spec, load_backend(backends, spec), metrics))
    return create_service_app(component, registry, metrics, [routes(registry, metrics)], max_upload_bytes)
