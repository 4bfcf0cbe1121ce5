"""Calls from the router to model services: one pooled client per replica URL, retries on other replicas
(:mod:`services.router.upstream.retry`), a failed replica ejected alone and probed back
(:mod:`services.router.upstream.ejection`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx

from services.auth.guard import add_timing, upstream_call
from services.core.contracts.errors import RequestTimeout, ServiceUnavailable, UpstreamError, error_from_body
from services.core.http.service_client import ServiceClient
from services.core.runtime.metrics import Metrics
from services.core.runtime.timing import depth_of, from_headers
from services.router.routing import REFUSED_DEPTH, ModelTable, Replica, ServedModel
from services.router.upstream.admission import admit, deadline_header, observe
from services.router.upstream.ejection import Ejections
from services.router.upstream.hold import ColdStarts
from services.router.upstream.retry import MAX_ATTEMPTS, Verdict, after_error, after_status, ejects
from services.router.upstream.retry_budget import RetryBudget

# one try of a call on one replica's client: what it opens (a streamed answer) goes on the try's exit stack
Send = Callable[[ServiceClient, contextlib.AsyncExitStack], Awaitable[httpx.Response]]

POOL_SIZE = 4096  # connections per service URL: above any model's admission limit, so calls never queue here


class ServiceClients:
    def __init__(self, table: ModelTable, timeout_s: float = 900.0, cold: ColdStarts | None = None,
                 metrics: Metrics | None = None, budget: RetryBudget | None = None) -> None:
        self.table = table
        self.metrics = metrics
        self.budget = budget or RetryBudget()  # retries add at most a tenth to a model's load
        self.timeout_s = timeout_s
        self.cold = cold or ColdStarts(table)  # model calls to a model with no ready replica wait for one
        # never wait long for a pooled connection: admission control bounds how many calls are made at once
        self.timeout = httpx.Timeout(timeout_s, connect=5.0, pool=10.0)
        self._clients: dict[str, ServiceClient] = {}
        self.ejections = Ejections(table, self.ready, metrics=metrics)

    def client(self, base_url: str) -> ServiceClient:
        client = self._clients.get(base_url)
        if client is None:
            self._forget_gone()
            client = ServiceClient(base_url, self.timeout,
                                   httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=64))
            self._clients[base_url] = client
        return client

    def _forget_gone(self) -> None:
        """Drop the clients of replicas no longer in the table with no call under way (pods come and go)."""
        listed = {r.url for model in self.table.models.values() for r in model.replicas}
        for url, client in list(self._clients.items()):
            if url not in listed and client.connections_in_use == 0:
                del self._clients[url]
                client.close()

    async def ready(self, url: str, model: str) -> bool:
        """Whether the service at ``url`` has ``model`` ready (its ``/readyz``): the probe of an ejected replica."""
        try:
            response = await self.client(url).get("/readyz", timeout=2.0)
            return response.status_code == 200 or response.json().get("models", {}).get(model) == "ready"
        except (httpx.HTTPError, ValueError, AttributeError):
            return False

    async def aclose(self) -> None:
        await self.ejections.aclose()
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    @contextlib.asynccontextmanager
    async def _replica(self, model: ServedModel, tried: set[str]) -> AsyncIterator[Replica]:
        """A replica of ``model`` not ``tried`` yet (now counted as tried), in flight for the block."""
        replica = self.table.pick(model, tried)
        tried.add(replica.url)
        replica.in_flight += 1
        try:
            yield replica
        finally:
            replica.in_flight -= 1

    @contextlib.asynccontextmanager
    async def _admitted(self, method: str, model: ServedModel, kwargs: dict[str, Any]) -> AsyncIterator[None]:
        """A model call (POST) is admitted first, carries the client's deadline, and is timed for Retry-After."""
        if method != "POST":
            yield
            return
        admit(model)
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **deadline_header(self.timeout_s)}
        started = time.monotonic()
        try:
            yield
        finally:
            observe(model, time.monotonic() - started)

    async def get(self, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", model, path, **kwargs)

    async def delete(self, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", model, path, **kwargs)

    async def post(self, model: ServedModel, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", model, path, **kwargs)

    async def request(self, method: str, model: ServedModel, path: str, *, replayable: bool = True,
                      **kwargs: Any) -> httpx.Response:
        """Call a replica of ``model``; a replica that refuses (or, for a ``replayable`` call, fails before the
        answer is complete) is left for another (:mod:`services.router.upstream.retry`). A model call (POST) to a model
        with no ready replica waits for one (scale from zero)."""
        async with self._admitted(method, model, kwargs):
            if method == "POST":
                model = await self.cold.ready(model)
            return await self._request(method, model, path, replayable, kwargs)

    async def _request(self, method: str, model: ServedModel, path: str, replayable: bool,
                       kwargs: dict[str, Any]) -> httpx.Response:
        async def send(client: ServiceClient, attempt: contextlib.AsyncExitStack) -> httpx.Response:
            return await client.request(method, path, **kwargs)

        async with contextlib.AsyncExitStack() as held:
            return await self._answer(model, replayable, send, held)

    async def _answer(self, model: ServedModel, replayable: bool, send: Send,
                      held: contextlib.AsyncExitStack) -> httpx.Response:
        """The first answer of ``model`` to hand on: ``send`` tried on one replica after another (a refusal,
        a 429 or 503, or, for a ``replayable`` call, a failure before the answer is complete goes on to the
        next, :mod:`services.router.upstream.retry`). The answering replica stays in flight, and what ``send`` opened
        stays open, until ``held`` closes; an error answer raises its typed error."""
        tried: set[str] = set()
        self.budget.first_try(model.name)
        while True:
            async with contextlib.AsyncExitStack() as attempt:
                replica = await attempt.enter_async_context(self._replica(model, tried))
                try:
                    with upstream_call():  # the request's upstream time (Server-Timing, the audit line)
                        response = await send(self.client(replica.url), attempt)
                except httpx.TransportError as exc:
                    if self._try_another(model, replica, exc, replayable, tried):
                        continue
                    raise _transport_error(model, exc) from None
                refused = after_status(response.status_code) is Verdict.RETRY
                _note_depth(replica, response, refused)
                if refused and self._retry(model, tried):
                    continue
                _note_timing(response)
                raise_for_error(response)
                held.push_async_exit(attempt.pop_all())
                return response

    def _retry(self, model: ServedModel, tried: set[str]) -> bool:
        """Whether the call goes on to another replica: one is left to try, and the retry budget pays for it."""
        if len(tried) >= MAX_ATTEMPTS or not any(r.available and r.url not in tried for r in model.replicas):
            return False
        allowed = self.budget.try_retry(model.name)
        if self.metrics:
            self.metrics.retries.labels(model.name, "retried" if allowed else "refused_by_budget").inc()
        return allowed

    def _try_another(self, model: ServedModel, replica: Replica, exc: httpx.TransportError, replayable: bool,
                     tried: set[str]) -> bool:
        """After ``exc`` from ``replica``: eject it if it failed; True when the call goes on to another."""
        if ejects(exc):
            self.ejections.eject(model.name, replica, type(exc).__name__)
        return after_error(exc, replayable) is not Verdict.GIVE_UP and self._retry(model, tried)

    @contextlib.asynccontextmanager
    async def stream(self, model: ServedModel, path: str, *, replayable: bool = True,
                     **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """A streamed answer; the replica counts as in flight, and the connection stays checked out, until exit.

        Until the answer is handed on (its head read, an error status read whole) it is retried on another
        replica like ``request``; never after. Transport failures while the body is read (inside the
        ``async with``) become typed errors too: 504 for a timeout, 502 for a connection that broke.
        """
        async def send(client: ServiceClient, attempt: contextlib.AsyncExitStack) -> httpx.Response:
            response = await attempt.enter_async_context(client.stream("POST", path, **kwargs))
            if response.status_code >= 400:
                await response.aread()
            return response

        # (admitted first; then, for a model with no ready replica, held until one is ready)
        async with self._admitted("POST", model, kwargs), contextlib.AsyncExitStack() as held:
            model = await self.cold.ready(model)
            response = await self._answer(model, replayable, send, held)
            with transport_errors(model):
                yield response


@contextlib.contextmanager
def transport_errors(model: ServedModel) -> Iterator[None]:
    """Reading a streamed answer outside ``stream``'s block: a timeout is a 504, a broken connection a 502."""
    try:
        yield
    except httpx.TimeoutException:
        raise _timeout(model) from None
    except httpx.TransportError as exc:
        raise _broken(model, exc) from None


def _transport_error(model: ServedModel, exc: httpx.TransportError) -> Exception:
    """The error a client gets when a call's last try failed in transport."""
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return ServiceUnavailable(f"model '{model.name}' is unavailable: its service cannot be reached")
    if isinstance(exc, httpx.TimeoutException):
        return _timeout(model)
    return _broken(model, exc)


def _timeout(model: ServedModel) -> RequestTimeout:
    return RequestTimeout(f"model '{model.name}' did not answer in time")


def _broken(model: ServedModel, exc: Exception) -> UpstreamError:
    return UpstreamError(f"the connection to model '{model.name}' broke: {type(exc).__name__}")


def _note_depth(replica: Replica, response: httpx.Response, refused: bool) -> None:
    """The replica's queue depth as it answered (balancing weighs it); a refusal counts as full for a while."""
    depth = REFUSED_DEPTH if refused else depth_of(response.headers)
    if depth is not None:
        replica.report(depth, time.monotonic())


def _note_timing(response: httpx.Response) -> None:
    """The service's queue and compute time of this call, into the request's audit line."""
    spent = from_headers(response.headers)
    if spent is not None:
        add_timing(*spent)


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        body = {"error": {"message": response.text[:500]}}
    raise error_from_body(response.status_code, body, response.headers)
