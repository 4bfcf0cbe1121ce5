"""The router's client to its model services (``services/core/http/service_client.py``) against a real uvicorn server
built as the engine builds its own: connections kept alive and reused, bodies of any size both ways, streamed
answers, and every way a call can end early (timeout, cancellation, a stream left unread, a closed connection)
closing its connection so that the service hears it. Every time bound has a wide margin.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from services.core.contracts.specs import ServerSettings
from services.core.http.service_client import ONE_WRITE, ServiceClient
from tests.servers import ServerThread, dead_url

MARGIN_S = 10.0
TIMEOUT = httpx.Timeout(MARGIN_S)
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=4)


class Seen:
    def __init__(self) -> None:
        self.disconnected = threading.Event()


def transport_app(seen: Seen) -> FastAPI:
    app = FastAPI()

    @app.get("/peer")
    async def peer(request: Request) -> dict:
        return {"port": request.client.port}

    @app.post("/digest")
    async def digest(request: Request) -> dict:
        body = await request.body()
        return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest(), "type": request.headers["content-type"]}

    @app.get("/stream")
    async def stream(parts: int = 5, size: int = 100_000) -> StreamingResponse:
        async def chunks():
            for i in range(parts):
                yield bytes([i]) * size
        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @app.get("/slow")
    async def slow(request: Request) -> dict:
        try:
            while not await request.is_disconnected():
                await asyncio.sleep(0.01)
        finally:
            seen.disconnected.set()
        return {}

    return app


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def server(seen):
    with ServerThread(transport_app(seen), settings=ServerSettings(keep_alive_s=1)) as running:
        yield running


def run(coroutine_fn, url: str):
    async def main():
        client = ServiceClient(url, TIMEOUT, LIMITS)
        try:
            return await coroutine_fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_connections_are_kept_alive_and_reused(server):
    async def calls(client: ServiceClient) -> set[int]:
        ports = {(await client.get("/peer")).json()["port"] for _ in range(20)}
        assert client.connections_in_use == 0
        return ports

    assert len(run(calls, server.url)) == 1


def test_bodies_of_any_size_arrive_whole(server):
    big = bytes(range(256)) * (3 * ONE_WRITE // 256 + 7)  # past the size sent in one write with the head

    async def calls(client: ServiceClient) -> list[dict]:
        return [(await client.post("/digest", content=big, headers={"content-type": "application/x-test"})).json(),
                (await client.post("/digest", json={"a": [1, 2]})).json(),
                (await client.post("/digest", data={"k": "v"}, files={"f": ("a.bin", b"xyz", "audio/wav")})).json()]

    raw, as_json, form = run(calls, server.url)
    assert raw == {"bytes": len(big), "sha256": hashlib.sha256(big).hexdigest(), "type": "application/x-test"}
    assert as_json["type"] == "application/json" and as_json["bytes"] == len(b'{"a":[1,2]}')
    assert form["type"].startswith("multipart/form-data; boundary=")


def test_a_streamed_answer_is_read_as_it_comes(server):
    async def calls(client: ServiceClient) -> tuple[list[int], int]:
        async with client.stream("GET", "/stream?parts=6&size=200000") as response:
            assert response.status_code == 200
            sizes = [len(chunk) async for chunk in response.aiter_raw()]
        return sizes, client.connections_in_use

    sizes, in_use = run(calls, server.url)
    assert sum(sizes) == 6 * 200_000 and in_use == 0


def test_a_stream_left_unread_closes_its_connection(server):
    async def calls(client: ServiceClient) -> tuple[int, int, int]:
        first = (await client.get("/peer")).json()["port"]
        async with client.stream("GET", "/stream?parts=50&size=100000") as response:
            await response.aiter_raw().__anext__()
        after = (await client.get("/peer")).json()["port"]
        return first, after, client.connections_in_use

    first, after, in_use = run(calls, server.url)
    assert first != after and in_use == 0  # the half-read connection was not given to the next call


def test_a_call_cancelled_or_timed_out_closes_its_connection(server, seen):
    async def cancelled(client: ServiceClient) -> int:
        seen.disconnected.clear()
        call = asyncio.ensure_future(client.get("/slow"))
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return client.connections_in_use

    assert run(cancelled, server.url) == 0
    assert seen.disconnected.wait(MARGIN_S)

    async def timed_out(client: ServiceClient) -> int:
        seen.disconnected.clear()
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow", timeout=0.3)
        return client.connections_in_use

    assert run(timed_out, server.url) == 0
    assert seen.disconnected.wait(MARGIN_S)


def test_a_connection_the_service_closed_is_not_reused(server):
    async def calls(client: ServiceClient) -> tuple[int, int]:
        first = (await client.get("/peer")).json()["port"]
        await asyncio.sleep(2.5)  # past the server's keep-alive (1 s): it closes the idle connection
        return first, (await client.get("/peer")).json()["port"]

    first, second = run(calls, server.url)
    assert first != second


def test_unreachable_services_are_connect_errors():
    with dead_url() as url:
        with pytest.raises(httpx.ConnectError):
            run(lambda client: client.get("/peer"), url)
    with pytest.raises(httpx.ConnectError):
        run(lambda client: client.get("/peer"), "unix:/nonexistent/harmony-test.sock")


def test_raise_for_status_names_the_request(server):
    async def call(client: ServiceClient) -> httpx.Response:
        return await client.get("/missing")

    response = run(call, server.url)
    with pytest.raises(httpx.HTTPStatusError, match="/missing"):
        response.raise_for_status()
