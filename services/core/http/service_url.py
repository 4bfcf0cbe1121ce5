"""Where a model service listens, as one URL string: ``http://host:port`` (Kubernetes) or
``unix:/path/to/stt.sock`` (``harmony serve``: a Unix socket only the engine's user can open).

Parsed here alone; the router's clients are ``services/core/http/service_client.py``.
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


def sync_client(url: str, timeout: float = 30.0) -> httpx.Client:
    """A blocking httpx client for the service at ``url`` (tools, tests, benchmarks)."""
    path = socket_path(url)
    if path is None:
        return httpx.Client(base_url=url, timeout=timeout)
    return httpx.Client(base_url=UNIX_BASE_URL, transport=httpx.HTTPTransport(uds=path), timeout=timeout,
                        trust_env=False)
