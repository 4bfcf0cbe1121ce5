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
REQUEST_OUTCOMES = ("ok", "error")  # a model's requests (count_request), by how they ended


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    special = {429: "rate_limited", 499: "cancelled", 503: "unavailable", 504: "timeout"}
    return special.get(status, "client_error" if status < 500 else "server_error")


class Metrics:
    """Every metric of one app, declared by family (one method each): a new metric joins its family's method."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, process_cpu_seconds_total
        self._http_metrics()
        self._batching_metrics()
        self._stt_metrics()
        self._realtime_metrics()
        self._model_metrics()
        self._router_metrics()

    def _counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, labels: list[str]) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def _histogram(self, name: str, doc: str, labels: list[str],
                   buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)

    def _http_metrics(self) -> None:
        """Requests: by model and outcome, and every HTTP request by route template (RequestMetrics)."""
        self.requests = self._counter("harmony_requests_total", "Requests by model and outcome",
                                      ["component", "model", "outcome"])
        self.http_in_flight = self._gauge("harmony_http_in_flight_requests", "HTTP requests being served (the "
                                          "router's autoscaling metric)", ["component"])
        self.http_requests = self._counter("harmony_http_requests_total", "HTTP requests by route template and "
                                           "outcome", ["component", "route", "outcome"])
        self.request_time = self._histogram("harmony_request_seconds", "End-to-end HTTP request time, body "
                                            "included, by route template", ["component", "route"], LATENCY_BUCKETS)

    def _batching_metrics(self) -> None:
        """A model's admission and batch queue, the batches it runs and the audio they took in."""
        self.queue_depth = self._gauge("harmony_queue_depth", "Items waiting in a model's batch queue", ["model"])
        self.queue_capacity = self._gauge("harmony_queue_capacity", "Items a model's batch queue holds before it "
                                          "refuses new requests with 429 (batching.max_queue_size)", ["model"])
        self.in_flight = self._gauge("harmony_in_flight_requests", "Requests a model has admitted and not yet "
                                     "answered (the per-pod autoscaling metric)", ["model"])
        self.batch_size = self._histogram("harmony_batch_size", "Items per batch run", ["model"], BATCH_BUCKETS)
        self.queue_wait = self._histogram("harmony_queue_wait_seconds", "Time an item waited before its batch ran",
                                          ["model"], LATENCY_BUCKETS)
        self.abandoned_items = self._counter("harmony_abandoned_items_total", "Batch items a backend dropped while "
                                             "their batch ran, their caller gone (the rest of their work never "
                                             "done)", ["model"])
        self.inference_time = self._histogram("harmony_inference_seconds", "Time a batch took to run", ["model"],
                                              LATENCY_BUCKETS)
        self.audio_seconds = self._counter("harmony_audio_seconds_total", "Seconds of audio processed", ["model"])

    def _stt_metrics(self) -> None:
        # how speech recognition packed and guarded its windows
        self.packed_windows = self._counter("harmony_stt_packed_windows_total", "STT windows decoded inside a "
                                            "packed window shared with other requests' windows", ["model"])
        self.pack_fallbacks = self._counter("harmony_stt_pack_fallbacks_total", "STT windows that were packed but "
                                            "could not be split back cleanly, decoded again alone", ["model"])
        self.stt_fallbacks = self._counter("harmony_stt_fallbacks_total", "Whisper's guards at work per window, "
                                           "by reason (stt/guards.py FALLBACK_REASONS)", ["model", "reason"])

    def _realtime_metrics(self) -> None:
        self.realtime_turn_time = self._histogram("harmony_realtime_turn_seconds", "Realtime turns: end of the "
                                                  "turn (VAD or client commit) to its completed transcript",
                                                  ["model"])
        self.realtime_sessions = self._gauge("harmony_realtime_sessions", "Realtime transcription sessions open "
                                             "(WebSockets on /v1/realtime)", [])

    def _model_metrics(self) -> None:
        self.model_load_time = self._gauge("harmony_model_load_seconds", "Time taken to load a model", ["model"])
        self.model_ready = self._gauge("harmony_model_ready", "1 when a model of this service has loaded and "
                                       "serves, 0 while it loads or after its load failed", ["model"])

    def _router_metrics(self) -> None:
        """The router's hold (scale from zero), retry budget and ejections."""
        self.held = self._gauge("harmony_router_held_requests", "Requests the router holds for a model with no "
                                "ready replica (scale from zero)", ["model"])
        self.retries = self._counter("harmony_router_retries_total", "Calls the router would try again on another "
                                     "replica, by outcome: retried, or refused_by_budget (retries are kept to a "
                                     "tenth of first tries)", ["model", "outcome"])
        self.ejections = self._counter("harmony_router_ejections_total", "Replicas the router took out of "
                                       "balancing after a failed call (probed back on /readyz)", ["model"])
        self.ejected = self._gauge("harmony_router_ejected_replicas", "Replicas of a model the router holds "
                                   "ejected now", ["model"])

    def count_request(self, model: str, outcome: str) -> None:
        self.requests.labels(self.component, model, outcome).inc()

    def declare_model(self, model: str) -> None:
        """A model service's series of ``model``, at zero from its registration (histograms with empty buckets):
        dashboards and alerts see them before its first request or batch, where an absent series is no data."""
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(self.component, model, outcome)
        for family in (self.queue_depth, self.in_flight, self.batch_size, self.queue_wait, self.abandoned_items,
                       self.inference_time, self.audio_seconds):
            family.labels(model)

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
