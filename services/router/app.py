"""The router app factory: the public OpenAI-compatible API in front of the model services."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.auth.gate import Gate
from services.auth.middleware import AuthAuditMiddleware
from services.auth.quota_metrics import quota_usage_gauge
from services.batches.area import BatchArea
from services.batches.metrics import BatchMetrics
from services.batches.runner import BatchRunner
from services.core.contracts.specs import HarmonyConfig
from services.core.http.disconnect import CancelOnDisconnect
from services.core.http.draining import Drain
from services.core.http.errors import install_error_handlers
from services.core.http.methods import AllowedMethods
from services.core.http.unsupported import IgnoredFields
from services.core.http.uploads import SpoolBudget, UploadLimitMiddleware
from services.core.runtime.logs import quiet_http_client_logs
from services.core.runtime.metrics import Metrics, RequestMetrics
from services.core.runtime.tracing import fastapi_telemetry
from services.playground import routes as playground
from services.router import service_metrics
from services.router.api import (
    admin,
    batches,
    conversions,
    embeddings,
    files,
    realtime,
    speech,
    transcriptions,
    vad,
    voice_admin,
)
from services.router.api import models as models_routes
from services.router.cluster.wake import Waker
from services.router.pipelines import PipelineRunner
from services.router.routing import ModelTable
from services.router.upstream.admission import ClientDeadline
from services.router.upstream.clients import ServiceClients
from services.router.upstream.hold import ColdStarts
from services.router.voices import VoiceDirectory
from services.store.errors import StoreErrorsCollector


def build_table(config: HarmonyConfig, endpoints: dict[str, list[str]]) -> ModelTable:
    table = ModelTable()
    for model in config.models:
        table.set_model(model, endpoints.get(model.name, []))
    for route in config.routes:
        table.set_route(route)
    return table


def _install_gate(app: FastAPI, gate: Gate) -> None:
    app.add_middleware(AuthAuditMiddleware, gate=gate)  # outside the upload limit: refuses before a body is read
    app.state.gate = gate
    if gate.required:
        app.include_router(admin.routes(gate))


def _batch_runner(area: BatchArea, gate: Gate, metrics: Metrics) -> BatchRunner:
    """The batch runner, and the stores' metrics on the router's registry: batches ended and overdue, the keys'
    usage against their quotas, the stores' failures."""
    runner = BatchRunner(area)
    runner.metrics = BatchMetrics(metrics.registry, runner.opened_database)
    metrics.registry.register(StoreErrorsCollector())
    if gate.db is not None:
        metrics.registry.register(quota_usage_gauge(gate.db))
    return runner


def create_router_app(config: HarmonyConfig, table: ModelTable, gate: Gate | None = None,
                      waker: Waker | None = None) -> FastAPI:
    """The router; ``gate`` (default: from ``config.auth``, ``config.audit``, ``config.database``) checks API keys
    and writes the audit trail; ``waker`` (in Kubernetes) asks the operator to wake models scaled to zero."""
    quiet_http_client_logs()  # the calls to the services are not news: one INFO line each would flood the log
    gate = gate or Gate.from_config(config)
    metrics = Metrics("router")
    clients = ServiceClients(table, timeout_s=config.server.service_timeout_s,
                             cold=ColdStarts(table, waker, metrics), metrics=metrics)
    area = BatchArea(config, gate.db)
    runner = _batch_runner(area, gate, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        missing = area.missing_object_store()
        if missing:
            logging.getLogger("harmony.batches").warning("the batch runner does not run: %s", missing)
        else:
            runner.start(app)  # the router's own app, in process: a batch's requests take its every check
        holds = asyncio.create_task(gate.keep_holds(), name="quota-holds")  # this router's holds stay counted
        yield
        holds.cancel()
        await runner.stop()
        await clients.aclose()
        area.close()
        gate.close()

    app = FastAPI(title="Harmony Speech Engine", version="0.1.0", lifespan=lifespan, telemetry=fastapi_telemetry())
    app.state.table = table
    app.state.clients = clients
    install_error_handlers(app)
    app.add_middleware(AllowedMethods, routes=app.router.routes)  # innermost: OPTIONS and 405 list every method
    app.state.drain = drain = Drain()  # started at SIGTERM: its end answers what still runs 503 shutting_down
    app.add_middleware(CancelOnDisconnect, drain=drain)  # a client that leaves (or the drain's end) cancels the work
    app.add_middleware(ClientDeadline)  # how long the client will wait, for admission and the model services
    app.add_middleware(UploadLimitMiddleware, max_bytes=config.server.max_upload_bytes,
                       path_limits={"/v1/files": config.files.max_bytes},
                       budget=SpoolBudget(config.server.spool_budget_bytes))
    _install_gate(app, gate)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(IgnoredFields, enabled=config.server.ignore_unsupported)  # fields let through, named

    app.include_router(metrics.router())
    app.include_router(models_routes.routes(table, clients))
    app.state.voices = VoiceDirectory(table, clients)
    app.state.pipelines = PipelineRunner(table, clients, app.state.voices)
    app.include_router(transcriptions.routes(table, clients, app.state.pipelines))
    app.include_router(speech.routes(app.state.voices, clients, app.state.pipelines))
    app.include_router(voice_admin.routes(app.state.pipelines, clients))
    app.include_router(embeddings.routes(app.state.pipelines))
    app.include_router(conversions.routes(app.state.pipelines))
    app.include_router(vad.routes(table, clients))
    app.include_router(realtime.routes(table, clients, metrics))
    app.include_router(files.routes(area))
    app.include_router(batches.routes(area, runner.wake))
    app.state.batch_runner = runner

    _health_routes(app, table, clients)
    playground.install(app, table, clients, auth_required=gate.required)
    return app


def _health_routes(app: FastAPI, table: ModelTable, clients: ServiceClients) -> None:
    app.include_router(service_metrics.routes(table, clients))  # harmony serve's services, for Prometheus

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready when every model has at least one ready replica; a model whose weights are being fetched shows
        how far (its services' ``weights``: bytes done of the whole, the revision)."""
        async def ready(url: str) -> tuple[bool, dict]:
            try:
                response = await clients.client(url).get("/readyz", timeout=2.0)
                body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                    else {}
                return response.status_code == 200, body if isinstance(body, dict) else {}
            except (httpx.HTTPError, ValueError):
                return False, {}

        states, weights = {}, {}
        for name, model in table.models.items():
            if not model.replicas and model.spec.autoscaling and model.spec.autoscaling.scales_to_zero:
                states[name] = "scaled to zero"  # a request wakes it
                continue
            results = await asyncio.gather(*(ready(r.url) for r in model.replicas))
            states[name] = "ready" if any(ok for ok, _ in results) else "not ready"
            fetching = [body["weights"][name] for ok, body in results
                        if not ok and isinstance(body.get("weights"), dict) and name in body["weights"]]
            if states[name] != "ready" and fetching:
                weights[name] = fetching[0]
        ok = bool(states) and all(s != "not ready" for s in states.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "models": states,
                             **({"weights": weights} if weights else {})},
                            status_code=200 if ok else 503)
