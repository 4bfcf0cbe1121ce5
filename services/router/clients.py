"""Calls from the router to model services: one pooled httpx client per service, retries on other replicas."""

from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator

import httpx
from services.core.errors import HarmonyError, ServiceUnavailable, error_from_body
from services.router.routing import ModelTable, Replica, ServedModel


class ServiceClients:
    def __init__(self, table: ModelTable, timeout_s: float = 900.0) -> None:
        self.table = table
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._clients: dict[str, httpx.AsyncClient] = {}

    def client(self, base_url: str) -> httpx.AsyncClient:
        client = self._clients.get(base_url)
        if client is None:
            client = httpx.AsyncClient(base_url=base_url, timeout=self.timeout,
                                       limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
            self._clients[base_url] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    @contextlib.asynccontextmanager
    async def _replica(self, model: ServedModel, exclude: set[str]) -> AsyncIterator[Replica]:
        replica = self.table.pick(model, exclude)
        replica.in_flight += 1
        try:
            yield replica
        finally:
            replica.in_flight -= 1

    async def get(self, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", model, path, **kwargs)

    async def delete(self, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", model, path, **kwargs)

    async def post(self, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", model, path, **kwargs)

    async def request(self, method: str, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        """Call a replica of ``model``; a replica that cannot be reached is skipped for the next one."""
        tried: set[str] = set()
        while True:
            async with self._replica(model, tried) as replica:
                try:
                    response = await self.client(replica.url).request(method, path, **kwargs)
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    ModelTable.mark_down(replica)
                    tried.add(replica.url)
                    if len(tried) >= len(model.replicas):
                        raise ServiceUnavailable(
                            f"model '{model.name}' is unavailable: its service cannot be reached") from None
                    continue
                except httpx.TimeoutException:
                    raise HarmonyError(f"model '{model.name}' did not answer in time") from None
            raise_for_error(response)
            return response

    @contextlib.asynccontextmanager
    async def stream(self, model: ServedModel, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        async with self._replica(model, set()) as replica:
            try:
                async with self.client(replica.url).stream("POST", path, **kwargs) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for_error(response)
                    yield response
            except (httpx.ConnectError, httpx.ConnectTimeout):
                ModelTable.mark_down(replica)
                raise ServiceUnavailable(f"model '{model.name}' is unavailable: its service cannot be reached") \
                    from None


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {"error": {"message": response.text[:500]}}
    raise error_from_body(response.status_code, body, response.headers)
