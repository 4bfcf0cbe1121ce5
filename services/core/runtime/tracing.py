"""Traces: OpenTelemetry spans across the router, its hop to a model service, the service, its batcher and the
pipelines; off (and free: no SDK call on a request's path) unless an OTLP endpoint is configured.

Turned on by the standard environment (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
with ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``...;
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off) when a process starts (``configure_from_env``),
before its apps are built; spans leave over OTLP/HTTP (protobuf) in batches. Tests ``configure`` a processor of their
own (the SDK's in-memory exporter).

The spans of one request, all in one trace (docs/operations.md "Traces"):

- the router's request (``POST /v1/audio/transcriptions``, SERVER): FastAPI's own instrumentation
  (``FastAPI(telemetry=fastapi_telemetry())``); the auth middleware names it with the request id (``tag_request``,
  which answers the trace id for the audit line);
- each step of a pipeline (``step vad``, ``step embed``...: ``span``);
- each call to a model service (``service POST /v1/audio/vad``, CLIENT: ``client_span``), whose W3C ``traceparent``
  (and the request id, ``x-request-id``) go out with it (``headers``);
- the model service's request (SERVER, a child of the call), named with the request id by ``RequestIdOfCaller``;
- per batch a request's items rode in: ``batch queue`` (its items' wait) and ``batch run`` (the batch's compute, with
  the batch's size, id and the request ids that shared it: ``record_batch``).

Every span carries the request id (``harmony.request_id``): a span processor copies it from a span's parent.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.trace import SpanKind, StatusCode, format_trace_id
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

REQUEST_ID = "harmony.request_id"  # the span attribute: the id of the audit line and of x-request-id
REQUEST_ID_HEADER = "x-request-id"
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: no traces
_OFF = nullcontext()
_BATCHES = itertools.count(1)

_provider: TracerProvider | None = None
_tracer: trace.Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def configure_from_env(service_name: str) -> bool:
    """Tracing on when the environment names an OTLP endpoint (and does not turn the SDK off); True when on."""
    if _tracer is not None:
        return True
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    if not (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    configure(BatchSpanProcessor(OTLPSpanExporter()), service_name)
    return True


def configure(processor: SpanProcessor, service_name: str = "harmony") -> TracerProvider:
    """Tracing on, its spans handed to ``processor``; ``OTEL_SERVICE_NAME`` wins over ``service_name``."""
    global _provider, _tracer
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(_RequestIds())
    provider.add_span_processor(processor)
    _provider, _tracer = provider, provider.get_tracer("harmony")
    return provider


def shutdown() -> None:
    """Export what is pending and turn tracing off (apps built while it was on keep their provider)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def fastapi_telemetry() -> TelemetryConfig:
    """``FastAPI(telemetry=...)``: server spans from our provider when tracing is on (never metrics or logs: the
    engine has its own), nothing at all when off."""
    if _provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {"tracer_provider": _provider, "metrics": False, "logs": False, "operation_spans": False,
            "exclude": _quiet}


def _quiet(scope: Scope) -> bool:
    return scope.get("path") in QUIET_PATHS


def request_id_of(context: Context | None) -> str | None:
    """The request id of the span current in ``context`` (the current context when None)."""
    attributes = getattr(trace.get_current_span(context), "attributes", None)
    value = attributes.get(REQUEST_ID) if attributes else None
    return value if isinstance(value, str) else None


class _RequestIds(SpanProcessor):
    """Every span gets its parent's request id."""

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        if span.attributes is None or REQUEST_ID not in span.attributes:
            request_id = request_id_of(parent_context)
            if request_id is not None:
                span.set_attribute(REQUEST_ID, request_id)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def tag_request(request_id: str) -> str | None:
    """The current request's span named with its ``request_id``; its trace id (32 hex digits), None when untraced."""
    if _tracer is None:
        return None
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    span.set_attribute(REQUEST_ID, request_id)
    return format_trace_id(span.get_span_context().trace_id)


def span(name: str, **attributes: Any):
    """A span around a block (a pipeline's step), a child of the current one; nothing when untraced."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _OFF
    return _tracer.start_as_current_span(name, attributes={f"harmony.{k}": v for k, v in attributes.items()})


class _ClientSpan:
    def __init__(self, tracer: trace.Tracer, method: str, path: str, url: str) -> None:
        self.span = tracer.start_span(f"service {method} {path.split('?')[0]}", kind=SpanKind.CLIENT,
                                      attributes={"http.request.method": method, "url.path": path,
                                                  "server.address": url})

    def __enter__(self) -> trace.Span:
        return self.span

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(StatusCode.ERROR, type(error).__name__)
        self.span.end()


def client_span(method: str, path: str, url: str):
    """A call to a model service inside a traced request: a CLIENT span (not made current: its caller goes on with
    its own span) whose context ``headers`` sends along; ``None`` in the block when untraced."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return _OFF
    return _ClientSpan(_tracer, method, path, url)


def headers(span: trace.Span) -> list[tuple[bytes, bytes]]:
    """The W3C trace context of ``span`` (``traceparent``, ``tracestate``) and its request id, as header lines."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    request_id = getattr(span, "attributes", {}).get(REQUEST_ID)
    if isinstance(request_id, str):
        carrier[REQUEST_ID_HEADER] = request_id
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in carrier.items()]


def answered(span: trace.Span | None, status: int) -> None:
    if span is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(StatusCode.ERROR)


class RequestIdOfCaller:
    """ASGI middleware of a model service (installed only when tracing is on): its request's span named with the
    request id the router sent (``x-request-id``)."""

    def __init__(self, app: ASGIApp, component: str) -> None:
        self.app = app
        self.component = component

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        current = trace.get_current_span()
        if scope["type"] == "http" and current.is_recording():
            current.set_attribute("harmony.component", self.component)
            for name, value in scope.get("headers", ()):
                if name == b"x-request-id":
                    current.set_attribute(REQUEST_ID, value.decode("latin-1"))
                    break
        await self.app(scope, receive, send)


def capture() -> Context | None:
    """The current context, when a traced request is under way (a batch item's, for ``record_batch``)."""
    if _tracer is None or not trace.get_current_span().is_recording():
        return None
    from opentelemetry import context

    return context.get_current()


def record_batch(model: str, members: Sequence[tuple[Context | None, float]], started: float, ended: float) -> None:
    """A batch's spans in each traced request it served: ``batch queue`` (from its first item's arrival to the start,
    ``time.monotonic`` seconds) and ``batch run`` (the compute: the batch's size, id and every request id in it)."""
    tracer = _tracer
    if tracer is None:
        return
    first: dict[int, tuple[Context, float, int]] = {}  # per request span: its context, earliest arrival, its items
    for context, enqueued in members:
        if context is not None:
            key = trace.get_current_span(context).get_span_context().span_id
            seen = first.get(key)
            first[key] = (context, min(enqueued, seen[1]) if seen else enqueued, (seen[2] if seen else 0) + 1)
    if not first:
        return
    wall, now = time.time_ns(), time.monotonic()

    def ns(moment: float) -> int:
        return wall - int((now - moment) * 1e9)

    ids = sorted({i for c, _, _ in first.values() if (i := request_id_of(c)) is not None})
    batch: dict[str, Any] = {"harmony.model": model, "harmony.batch.id": f"{model}#{next(_BATCHES)}:{os.getpid()}",
                             "harmony.batch.size": len(members), "harmony.batch.request_ids": ids}
    for context, enqueued, items in first.values():
        tracer.start_span("batch queue", context=context, start_time=ns(enqueued),
                          attributes={"harmony.model": model, "harmony.batch.items": items}).end(end_time=ns(started))
        tracer.start_span("batch run", context=context, start_time=ns(started),
                          attributes={**batch, "harmony.batch.items": items}).end(end_time=ns(ended))
