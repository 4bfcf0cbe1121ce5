"""Slow and broken clients against the engine's HTTP server (``services/core/http/server.py``), on raw sockets:
head and body timeouts, the connection limit, malformed requests, TCP_NODELAY on both ends.

The app is a real model service (Silero VAD), served exactly as ``harmony serve`` and Kubernetes serve it,
with small timeouts so that the tests are quick; every time bound has a wide margin.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from services.core.contracts.specs import NamedModel, ServerSettings, parse_config
from services.core.http.server import tcp_socket
from services.core.http.service_client import encode_request
from services.router.app import build_table, create_router_app
from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients
from services.vad.app import create_vad_app
from tests.servers import ServerThread
from tests.speech import silence, wav_bytes

SPEC = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}
HEADER_S, BODY_S = 0.5, 0.5
MARGIN = 10.0  # seconds a test waits for what should happen after a timeout of half a second


@pytest.fixture(scope="module")
def vad_app():
    return create_vad_app([NamedModel(**SPEC)])


SETTINGS = ServerSettings(header_timeout_s=HEADER_S, body_timeout_s=BODY_S, body_min_bytes_per_s=1000)


@pytest.fixture(scope="module")
def service(vad_app):
    with ServerThread(vad_app, settings=SETTINGS) as server:
        yield server


@pytest.fixture(scope="module")
def router(service):
    config = parse_config({"models": [SPEC]})
    with ServerThread(create_router_app(config, build_table(config, {"silero-vad": [service.url]})),
                      settings=SETTINGS) as server:
        yield server


def connect(server: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=MARGIN)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout here fails the test)."""
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def assert_openai_error(raw: bytes, status: int, code: str) -> dict[str, str]:
    got, headers, body = parse(raw)
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["code"] == code, body
    return headers


def multipart(data: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files={"file": ("a.wav", data, "audio/wav")})
    return request.read(), request.headers["content-type"]


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(service):
    with connect(service) as sock:
        started = time.monotonic()
        assert read_all(sock) == b""
        assert HEADER_S * 0.8 < time.monotonic() - started < MARGIN


def test_a_request_head_that_stalls_gets_408_then_close(service):
    with connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # no blank line: the head never ends
        assert_openai_error(read_all(sock), 408, "request_header_timeout")


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(service):
    with connect(service) as sock:
        for _ in range(3):  # slower than the header timeout in all, each head in time
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(HEADER_S / 3)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert_openai_error(read_all(sock), 408, "request_header_timeout")


@pytest.mark.parametrize("app, path", [("service", "/v1/audio/vad"), ("router", "/v1/audio/vad"),
                                       ("router", "/v1/audio/speech")])
def test_a_body_shorter_than_its_content_length_gets_400_after_the_body_timeout(request, app, path):
    """Multipart (read_form's streamed parsing) on the service and the router, JSON on the router."""
    if path == "/v1/audio/vad":
        body, content_type = multipart(wav_bytes(silence(1.0, 16000), 16000))
    else:
        body, content_type = b'{"model": "tts-1", "voice": "alloy", "input": "Hello"}', "application/json"
    with connect(request.getfixturevalue(app)) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body) + 100}\r\n\r\n".encode() + body)
        started = time.monotonic()
        headers = assert_openai_error(read_all(sock), 400, "request_body_timeout")
        assert BODY_S * 0.8 < time.monotonic() - started < MARGIN
        assert headers["connection"] == "close"


def test_a_body_that_trickles_in_is_cut_by_the_minimum_rate(service):
    """A byte every 0.2 s never idles for the body timeout; the minimum rate cuts it anyway."""
    body, content_type = multipart(wav_bytes(silence(1.0, 16000), 16000))
    with connect(service) as sock:
        sock.sendall(f"POST /v1/audio/vad HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        sock.settimeout(0.2)
        answer, sent = b"", 0
        deadline = time.monotonic() + MARGIN
        while not answer and time.monotonic() < deadline:
            try:
                sock.sendall(body[sent:sent + 1])
                sent += 1
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert sent < len(body) // 10
        sock.settimeout(MARGIN)
        reset = False
        try:  # the answer may come in several segments, or be waiting behind the write that failed
            answer += read_all(sock)
        except ConnectionResetError:
            reset = True
        if answer or not reset:
            assert_openai_error(answer, 400, "request_body_timeout")
        # else: the server answered and closed while a trickled byte sat unread in its buffer, so the kernel reset
        # the connection and dropped the answer before it was read: the body was still cut (asserted above)


def test_a_whole_request_is_answered_and_the_connection_kept(service):
    data = wav_bytes(silence(1.0, 16000), 16000)
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for _ in range(2):
            response = client.post("/v1/audio/vad", files={"file": ("a.wav", data, "audio/wav")})
            assert response.status_code == 200, response.text


def test_malformed_http_gets_400_in_openai_shape(service):
    for raw in (b"NONSENSE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"):
        with connect(service) as sock:
            sock.sendall(raw)
            headers = assert_openai_error(read_all(sock), 400, "invalid_http_request")
            assert headers["x-should-retry"] == "false"


def test_past_the_connection_limit_a_request_gets_503_in_openai_shape():
    settings = ServerSettings(max_connections=2, header_timeout_s=60)
    with ServerThread(create_vad_app([NamedModel(**SPEC)]), settings=settings) as server:  # its own app and model
        held = [connect(server) for _ in range(2)]
        try:
            time.sleep(0.2)  # the server has accepted both
            with connect(server) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                headers = assert_openai_error(read_all(extra), 503, "too_many_connections")
                assert headers["retry-after"] == "1"
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # admitted connections still work
            assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + MARGIN
        while time.monotonic() < deadline:  # with those gone, new connections are served again
            if httpx.get(server.url + "/healthz", timeout=MARGIN).status_code == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server never served again below the connection limit")


def nodelay(sock) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.parametrize("app", ["service", "router"])
def test_tcp_nodelay_on_accepted_connections(request, app):
    server = request.getfixturevalue(app)
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/healthz").status_code == 200
        server_side = [p.transport.get_extra_info("socket") for p in server.server.server_state.connections]
        assert server_side and all(nodelay(sock) for sock in server_side)


def test_tcp_nodelay_on_the_routers_connections_to_services(service):
    async def check() -> bool:
        clients = ServiceClients(ModelTable())
        try:
            response = await clients.client(service.url).get("/healthz")
            return nodelay(response.extensions["network_stream"].get_extra_info("socket"))
        finally:
            await clients.aclose()

    assert asyncio.run(check())


def test_listening_sockets_are_made_for_tcp():
    with tcp_socket() as sock:
        assert sock.proto == socket.IPPROTO_TCP and nodelay(sock)


def test_the_routers_clients_send_a_multipart_form_in_one_write(service):
    """httpx streams a form as dozens of small writes; with TCP_NODELAY each would be a packet of its own.
    The router's client writes a request's head and body at once (one ``transport.write`` per part)."""
    form = {"files": {"file": ("a.wav", wav_bytes(silence(0.5, 16000), 16000), "audio/wav")},
            "data": {"threshold": "0.5"}}
    assert len(encode_request("POST", b"/v1/audio/vad", b"localhost", dict(form))) == 1

    async def post() -> httpx.Response:
        clients = ServiceClients(ModelTable())
        try:
            return await clients.client(service.url).post("/v1/audio/vad", **form)
        finally:
            await clients.aclose()

    response = asyncio.run(post())
    assert response.status_code == 200, response.text
