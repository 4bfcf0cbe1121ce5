"""Where a model service listens, as one URL string: ``http://host:port`` (Kubernetes) or
``unix:/path/to/stt.sock`` (``harmony serve``: a Unix socket only the engine's user can open).

Parsed here alone; the router's clients are made by ``async_client``.
"""

from __future__ import annotations

import httpx

UNIX = "unix:"
UNIX_BASE_URL = "http://localhost"  # the Host of requests sent over a Unix socket


def unix_url(path: str) -> str:
    return UNIX + path


def socket_path(url: str) -> str | None:
    """The socket file of a ``unix:`` URL, else None."""
    return url[len(UNIX):] if url.startswith(UNIX) else None


class ServiceTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, sending a body of known length (a multipart form held in memory) in one write.

    httpx streams a multipart form as dozens of small pieces (each field's header, value, boundary), one
    write each: with TCP_NODELAY each is a packet of its own, and the service parses each as it comes.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not isinstance(request.stream, httpx.ByteStream) and "content-length" in request.headers:
            await request.aread()
        return await super().handle_async_request(request)


def async_client(url: str, timeout: httpx.Timeout, limits: httpx.Limits) -> httpx.AsyncClient:
    """A pooled client for the service at ``url`` (requests name paths only: ``client.get("/readyz")``)."""
    path = socket_path(url)
    if path is None:
        return httpx.AsyncClient(base_url=url, timeout=timeout, transport=ServiceTransport(limits=limits))
    transport = ServiceTransport(uds=path, limits=limits)
    return httpx.AsyncClient(base_url=UNIX_BASE_URL, transport=transport, timeout=timeout, trust_env=False)


def sync_client(url: str, timeout: float = 30.0) -> httpx.Client:
    """The same, blocking (tools, tests, benchmarks)."""
    path = socket_path(url)
    if path is None:
        return httpx.Client(base_url=url, timeout=timeout)
    return httpx.Client(base_url=UNIX_BASE_URL, transport=httpx.HTTPTransport(uds=path), timeout=timeout,
                        trust_env=False)
