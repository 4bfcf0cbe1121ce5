"""Prometheus metrics of one app (a model service or the router), each in its own registry."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, component: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("harmony_requests_total", "Requests by model and outcome",
                                ["component", "model", "outcome"], registry=r)
        self.queue_depth = Gauge("harmony_queue_depth", "Items waiting in a model's batch queue",
                                 ["model"], registry=r)
        self.batch_size = Histogram("harmony_batch_size", "Items per batch run", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("harmony_queue_wait_seconds", "Time an item waited before its batch ran",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_time = Histogram("harmony_inference_seconds", "Time a batch took to run", ["model"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.request_time = Histogram("harmony_request_seconds", "End-to-end request time", ["component", "model"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.audio_seconds = Counter("harmony_audio_seconds_total", "Seconds of audio processed", ["model"],
                                     registry=r)
        self.model_load_time = Gauge("harmony_model_load_seconds", "Time taken to load a model", ["model"],
                                     registry=r)
        self.component = component

    def count_request(self, model: str, outcome: str) -> None:
        self.requests.labels(self.component, model, outcome).inc()

    def router(self) -> APIRouter:
        api = APIRouter()

        @api.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return api
