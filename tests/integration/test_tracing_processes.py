"""A trace across two processes: the router here (spans in the SDK's in-memory exporter) and a real VAD model service
in its own process (``services.service_main``, as a Kubernetes pod runs it), which exports its spans over OTLP/HTTP
to a receiver on loopback that decodes the protobuf export. The service's spans carry the router's trace id, its
request span is the child of the router's call, and its batch spans name the router's request id."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.core.contracts.specs import parse_config
from services.core.runtime import tracing
from services.router.app import build_table, create_router_app
from tests.servers import ServerThread, free_port, stop_process, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
       "batching": {"max_batch_size": 4, "max_queue_delay_ms": 5, "max_queue_size": 16}}


class Receiver:
    """An OTLP/HTTP trace receiver: every span exported to it, decoded, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                export = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource in export.resource_spans:
                        name = next(a.value.string_value for a in resource.resource.attributes
                                    if a.key == "service.name")
                        receiver.spans += [(name, s) for scope in resource.scope_spans for s in scope.spans]
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, trace_id: bytes, names: set[str], timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                spans = [s for _, s in self.spans if s.trace_id == trace_id]
            if names <= {s.name for s in spans} or time.monotonic() > deadline:
                return spans
            time.sleep(0.02)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vad-process")
    (folder / "model.yaml").write_text(yaml.safe_dump(VAD))
    receiver = Receiver()
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50"}
    env.pop("OTEL_SERVICE_NAME", None)
    service = subprocess.Popen([sys.executable, "-m", "services.service_main", "--model-file",
                                str(folder / "model.yaml"), "--host", "127.0.0.1", "--port", str(port),
                                "--log-level", "warning"], env=env)
    exporter = InMemorySpanExporter()
    tracing.configure(SimpleSpanProcessor(exporter), "harmony-router")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, timeout=120)
        config = parse_config({"models": [VAD], "audit": {"sink": "none"}})
        with ServerThread(create_router_app(config, build_table(config, {"silero-vad": [url]}))) as router:
            yield router.url, exporter, receiver
    finally:
        tracing.shutdown()
        stop_process(service)
        receiver.server.shutdown()


def test_the_service_process_continues_the_routers_trace(two_processes):
    router, exporter, receiver = two_processes
    audio, rate = synthesize(SENTENCES[1])
    answer = httpx.post(router + "/v1/audio/vad", timeout=60, headers={"x-request-id": "req_two_processes"},
                        data={"model": "silero-vad"}, files={"file": ("joe.wav", wav_bytes(audio, rate), "audio/wav")})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while not (calls := [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]):
        assert time.monotonic() < deadline, "the router recorded no call to the service"
        time.sleep(0.01)
    call = calls[0]
    assert call.attributes[tracing.REQUEST_ID] == "req_two_processes"
    trace_id = call.context.trace_id.to_bytes(16, "big")
    spans = receiver.wait_for(trace_id, {"POST /v1/audio/vad", "batch queue", "batch run"})
    by_name = {s.name: s for s in spans}
    assert set(by_name) >= {"POST /v1/audio/vad", "batch queue", "batch run"}, [s.name for s in spans]
    served = by_name["POST /v1/audio/vad"]
    assert served.parent_span_id == call.context.span_id.to_bytes(8, "big")  # the child of the router's call
    assert {receiver_name for receiver_name, s in receiver.spans if s.trace_id == trace_id} == {"harmony-silero-vad"}

    def attributes(span) -> dict:
        return {a.key: a.value for a in span.attributes}

    assert attributes(served)[tracing.REQUEST_ID].string_value == "req_two_processes"
    run = attributes(by_name["batch run"])
    assert run["harmony.batch.size"].int_value >= 1 and run[tracing.REQUEST_ID].string_value == "req_two_processes"
    assert "req_two_processes" in [v.string_value for v in run["harmony.batch.request_ids"].array_value.values]
    assert by_name["batch run"].parent_span_id == served.span_id
