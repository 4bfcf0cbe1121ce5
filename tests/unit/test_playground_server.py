"""The playground's server side: the models' figures read from a real metrics registry, and the real-time
endpoint detected among the app's routes (included routers nest theirs)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, WebSocket
from prometheus_client import generate_latest

from services.auth.gate import is_open
from services.core.runtime.metrics import Metrics
from services.playground.model_metrics import ModelFigures, add_exposition
from services.playground.routes import REALTIME_PATH, has_websocket


def test_figures_sum_a_services_metrics_per_model_and_ignore_other_models():
    metrics = Metrics("stt")
    metrics.queue_depth.labels("whisper-base").set(3)
    for size in (4, 2):
        metrics.batch_size.labels("whisper-base").observe(size)
    metrics.audio_seconds.labels("whisper-base").inc(12.5)
    metrics.requests.labels("stt", "whisper-base", "ok").inc(2)
    metrics.requests.labels("stt", "whisper-base", "client_error").inc(5)
    metrics.queue_depth.labels("not-in-the-table").set(9)
    figures = {"whisper-base": ModelFigures()}
    add_exposition(generate_latest(metrics.registry).decode(), figures)
    got = figures["whisper-base"]
    assert (got.queue_depth, got.batch_items, got.batches, got.audio_seconds, got.requests) == (3, 6, 2, 12.5, 2)


def test_the_realtime_endpoint_is_found_inside_an_included_router():
    app = FastAPI()
    assert not has_websocket(app.router.routes, REALTIME_PATH)
    api = APIRouter()

    @api.websocket(REALTIME_PATH)
    async def realtime(websocket: WebSocket) -> None:
        await websocket.close()

    app.include_router(api)
    assert has_websocket(app.router.routes, REALTIME_PATH)
    assert not has_websocket(app.router.routes, "/v1/models")


def test_the_page_and_its_files_are_open_and_the_api_is_not():
    assert is_open("/") and is_open("/playground/static/js/api.js") and is_open("/metrics")
    assert not is_open("/v1/audio/voices") and not is_open("/playgroundx") and not is_open("/admin/keys")
