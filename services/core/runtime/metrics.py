"""Prometheus metrics of one app (a model service or the router), each in its own registry."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# every outcome an HTTP request can have: label values come from this fixed set only
OUTCOMES = ("ok", "client_error", "cancelled", "rate_limited", "server_error", "unavailable", "timeout")
UNMATCHED = "unmatched"  # the route label of a request no route took (404s, bodies refused before routing)


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    special = {429: "rate_limited", 499: "cancelled", 503: "unavailable", 504: "timeout"}
    return special.get(status, "client_error" if status < 500 else "server_error")


class Metrics:
    def __init__(self, component: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total: memory and CPU
        self.requests = Counter("harmony_requests_total", "Requests by model and outcome",
                                ["component", "model", "outcome"], registry=r)
        self.queue_depth = Gauge("harmony_queue_depth", "Items waiting in a model's batch queue",
                                 ["model"], registry=r)
        self.queue_capacity = Gauge("harmony_queue_capacity", "Items a model's batch queue holds before it refuses "
                                    "new requests with 429 (batching.max_queue_size)", ["model"], registry=r)
        self.in_flight = Gauge("harmony_in_flight_requests", "Requests a model has admitted and not yet answered "
                               "(the per-pod autoscaling metric)", ["model"], registry=r)
        self.held = Gauge("harmony_router_held_requests", "Requests the router holds for a model with no ready "
                          "replica (scale from zero)", ["model"], registry=r)
        self.retries = Counter("harmony_router_retries_total", "Calls the router would try again on another "
                               "replica, by outcome: retried, or refused_by_budget (retries are kept to a tenth "
                               "of first tries)", ["model", "outcome"], registry=r)
        self.batch_size = Histogram("harmony_batch_size", "Items per batch run", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram("harmony_queue_wait_seconds", "Time an item waited before its batch ran",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.abandoned_items = Counter("harmony_abandoned_items_total", "Batch items a backend dropped while "
                                       "their batch ran, their caller gone (the rest of their work never done)",
                                       ["model"], registry=r)
        self.inference_time = Histogram("harmony_inference_seconds", "Time a batch took to run", ["model"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.http_in_flight = Gauge("harmony_http_in_flight_requests", "HTTP requests being served (the router's "
                                    "autoscaling metric)", ["component"], registry=r)
        self.http_requests = Counter("harmony_http_requests_total", "HTTP requests by route template and outcome",
                                     ["component", "route", "outcome"], registry=r)
        self.request_time = Histogram("harmony_request_seconds", "End-to-end HTTP request time, body included, "
                                      "by route template", ["component", "route"], buckets=LATENCY_BUCKETS,
                                      registry=r)
        self.audio_seconds = Counter("harmony_audio_seconds_total", "Seconds of audio processed", ["model"],
                                     registry=r)
        self.packed_windows = Counter("harmony_stt_packed_windows_total", "STT windows decoded inside a packed "
                                      "window shared with other requests' windows", ["model"], registry=r)
        self.pack_fallbacks = Counter("harmony_stt_pack_fallbacks_total", "STT windows that were packed but could "
                                      "not be split back cleanly, decoded again alone", ["model"], registry=r)
        self.stt_fallbacks = Counter("harmony_stt_fallbacks_total", "Whisper's guards at work per window, by "
                                     "reason (stt/guards.py FALLBACK_REASONS)", ["model", "reason"], registry=r)
        self.realtime_turn_time = Histogram("harmony_realtime_turn_seconds", "Realtime turns: end of the turn (VAD or "
                                            "client commit) to its completed transcript", ["model"], registry=r)
        self.model_load_time = Gauge("harmony_model_load_seconds", "Time taken to load a model", ["model"],
                                     registry=r)
        self.model_ready = Gauge("harmony_model_ready", "1 when a model of this service has loaded and serves, 0 "
                                 "while it loads or after its load failed", ["model"], registry=r)
        self.ejections = Counter("harmony_router_ejections_total", "Replicas the router took out of balancing "
                                 "after a failed call (probed back on /readyz)", ["model"], registry=r)
        self.ejected = Gauge("harmony_router_ejected_replicas", "Replicas of a model the router holds ejected now",
                             ["model"], registry=r)
        self.realtime_sessions = Gauge("harmony_realtime_sessions", "Realtime transcription sessions open "
                                       "(WebSockets on /v1/realtime)", registry=r)
        self.component = component

    def count_request(self, model: str, outcome: str) -> None:
        self.requests.labels(self.component, model, outcome).inc()

    def router(self) -> APIRouter:
        api = APIRouter()

        @api.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

        return api


class RequestMetrics:
    """ASGI middleware: every request counted by route template (never the raw path, so labels stay bounded)
    and outcome, and its time observed when the response has ended (a streamed body included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.metrics.http_in_flight.labels(self.metrics.component)
        in_flight.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            in_flight.dec()
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            component = self.metrics.component
            self.metrics.http_requests.labels(component, route, outcome_of(status)).inc()
            self.metrics.request_time.labels(component, route).observe(time.perf_counter() - started)
