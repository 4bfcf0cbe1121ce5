"""The generic model service: a FastAPI app around loaded models, each behind its own batcher.

Every service answers ``/healthz`` (the process lives), ``/readyz`` (every model is
loaded, and the service is not draining: :mod:`services.core.http.draining`; while a model's weights are
fetched, how far), ``/metrics`` and ``/v1/models``; the task-specific routes come from the task's own module.
Models load in the background once the server is up (``models_settled`` says when they are done).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from services.core.contracts.errors import ModelNotFound, ServiceUnavailable
from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import WeightsProgress
from services.core.http.disconnect import CancelOnDisconnect
from services.core.http.draining import Drain, RefuseWhileDraining
from services.core.http.errors import install_error_handlers
from services.core.http.methods import AllowedMethods
from services.core.http.uploads import UploadLimitMiddleware
from services.core.runtime import tracing
from services.core.runtime.batching import DynamicBatcher
from services.core.runtime.interactive import INTERACTIVE
from services.core.runtime.logs import note_model
from services.core.runtime.metrics import Metrics, RequestMetrics
from services.core.runtime.timing import TimingHeaders
from services.core.tasks.backends import BackendRegistry
from services.core.tasks.protocols import Backend, Capabilities, SttBackend

log = logging.getLogger("harmony.service")


B = TypeVar("B", bound=Backend)
STOP_GRACE_S = 1.0  # at shutdown, batches still computing get this long to end (then again after giving up theirs)


class FetchAbandoned(Exception):
    """The model's load was cancelled (the server stops) while its weights came: the fetch stops at its next
    progress, what arrived kept for the next start to resume from."""


class LoadedModel(Generic[B]):
    """One model of a service: its spec, its backend (typed by its task's protocol) and its batcher."""

    def __init__(self, spec: NamedModel, backend: B, metrics: Metrics) -> None:
        self.spec = spec
        self.backend: B = backend
        self.metrics = metrics
        # every model of the process shares its cores, so every batcher shares the process's interactive activity
        self.batcher: DynamicBatcher = DynamicBatcher(spec.name, backend.run_batch, spec.batching, metrics,
                                                      activity=INTERACTIVE)
        self.ready = False
        self.error: str | None = None
        self.weights: WeightsProgress | None = None  # fetching a remote source: answered on /readyz
        self.capabilities = Capabilities()  # beyond the task's protocol: found when the backend has loaded
        self._abandoned = threading.Event()  # set when the load is cancelled: the fetch's thread gives up
        metrics.declare_model(spec.name)
        metrics.model_ready.labels(spec.name).set(0)
        metrics.queue_capacity.labels(spec.name).set(spec.batching.max_queue_size)

    async def load(self) -> None:
        started = time.monotonic()
        try:
            if self.spec.source.remote or (self.spec.source.path and self.spec.source.sha256):
                try:
                    await asyncio.to_thread(self._fetch)
                except asyncio.CancelledError:  # the thread runs on: stop it, or the process waits for it
                    self._abandoned.set()
                    raise
            await asyncio.to_thread(self.backend.load)
            self.capabilities = Capabilities.of(self.backend, self.spec.task)
        except Exception as exc:  # noqa: BLE001 - reported on /readyz and in the log
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("loading %s failed", self.spec.name)
            return
        self.metrics.model_load_time.labels(self.spec.name).set(time.monotonic() - started)
        self.batcher.start()
        self.ready = True
        self.metrics.model_ready.labels(self.spec.name).set(1)

    def _fetch(self) -> None:
        """A hf, url or oci source fetched into the model cache (or found there), a path checked against its
        ``sha256``; the backend then loads the weights from that path, the only kind of source it sees besides a
        package."""
        from services.weights.fetch import fetch, local_spec

        def progress(state: WeightsProgress) -> None:
            if self._abandoned.is_set():
                raise FetchAbandoned(self.spec.name)
            self.weights = state

        path = fetch(self.spec.source, listener=progress)
        self.backend.spec = local_spec(self.spec, path)

    def describe(self) -> dict[str, Any]:
        languages = self.backend.languages if isinstance(self.backend, SttBackend) else self.spec.languages
        return {"id": self.spec.name, "object": "model", "owned_by": "harmony", "task": self.spec.task.value,
                "backend": self.spec.backend, "aliases": self.spec.aliases, "ready": self.ready,
                "languages": languages}


class ModelRegistry(Generic[B]):
    """The models of one task in a service, by name and alias."""

    def __init__(self) -> None:
        self.models: dict[str, LoadedModel[B]] = {}

    def add(self, model: LoadedModel[B]) -> None:
        self.models[model.spec.name] = model
        for alias in model.spec.aliases:
            self.models.setdefault(alias, model)

    def unique(self) -> list[LoadedModel[B]]:
        return list({id(m): m for m in self.models.values()}.values())

    def get(self, name: str | None) -> LoadedModel[B]:
        if not name:
            models = self.unique()
            if len(models) == 1:
                model = models[0]
            else:
                raise ModelNotFound("'model' is required: this service serves "
                                    + ", ".join(m.spec.name for m in models), param="model")
        elif name in self.models:
            model = self.models[name]
        else:
            raise ModelNotFound(f"model '{name}' is not served here", param="model")
        note_model(model.spec.name)  # the request's log lines name it
        if not model.ready:
            raise ServiceUnavailable(f"model '{model.spec.name}' is not loaded yet" +
                                     (f" (load failed: {model.error})" if model.error else ""))
        return model


def create_service_app(component: str, registries: Sequence[ModelRegistry[Any]], metrics: Metrics,
                       routes: list[APIRouter], max_upload_bytes: int = 25 * 1024 * 1024) -> FastAPI:
    """The service app: ``registries`` (one per task served) loaded at start-up, ``routes`` for the task's API."""
    models = [m for registry in registries for m in registry.unique()]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Models load (and fetch their weights) while the service already answers: /healthz at once, /readyz 503
        # with the fetch's progress until every model is loaded, model calls 503 until theirs is.
        loading = asyncio.create_task(_load_all(models), name="load-models")
        yield
        if not loading.done():
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
        # the server has drained (or given up) its requests: what the batchers still hold is work for nobody
        await asyncio.gather(*(m.batcher.stop(grace_s=STOP_GRACE_S) for m in models))

    # its request spans, children of the router's call (traceparent), when tracing is on; nothing otherwise
    app = FastAPI(title=f"Harmony {component} service", lifespan=lifespan, telemetry=tracing.fastapi_telemetry())
    app.state.models = {m.spec.name: m for m in models}
    app.state.metrics = metrics
    app.state.drain = drain = Drain()  # started at SIGTERM (service_main): not ready, no new model calls
    install_error_handlers(app)
    app.add_middleware(AllowedMethods, routes=app.router.routes)  # innermost: OPTIONS and 405 list every method
    app.add_middleware(CancelOnDisconnect, drain=drain)  # a client that leaves (or the drain's end) cancels the work
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_upload_bytes)
    app.add_middleware(RefuseWhileDraining, drain=drain)
    app.add_middleware(RequestMetrics, metrics=metrics)
    # every answer says how many requests the service has admitted and not answered: the router balances by it
    app.add_middleware(TimingHeaders, depth=lambda: sum(m.batcher.admission.requests_in_flight for m in models))
    if tracing.enabled():
        app.add_middleware(tracing.RequestIdOfCaller, component=component)  # the router's request id in its spans
    app.include_router(metrics.router())

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        states = {m.spec.name: ("draining" if drain.draining else "ready" if m.ready else (m.error or "loading"))
                  for m in models}
        ready = all(m.ready for m in models) and not drain.draining
        weights = {m.spec.name: m.weights.model_dump() for m in models if m.weights is not None}
        return JSONResponse({"status": "ready" if ready else "not ready", "models": states,
                             **({"weights": weights} if weights else {})},
                            status_code=200 if ready else 503)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.describe() for m in models]}

    for router in routes:
        app.include_router(router)
    return app


async def _load_all(models: list[LoadedModel[Any]]) -> None:
    await asyncio.gather(*(m.load() for m in models))


def models_settled(app: FastAPI) -> bool:
    """Every model of a service app loaded, or failed to (its error on /readyz): what ``harmony serve`` waits for
    before it says it is ready."""
    return all(m.ready or m.error is not None for m in app.state.models.values())


def load_models(task: Task, models: list[NamedModel], metrics: Metrics,
                backends: BackendRegistry | None = None) -> ModelRegistry[Any]:
    """A registry of ``models`` of ``task``, each with its installed backend (not loaded yet) and batcher."""
    backends = backends or BackendRegistry.installed()
    registry: ModelRegistry[Any] = ModelRegistry()
    for spec in models:
        if spec.task == task:
            registry.add(LoadedModel(spec, backends.get(spec.backend, task).create(spec), metrics))
    return registry
