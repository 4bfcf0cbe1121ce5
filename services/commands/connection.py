"""Which server a command talks to: ``--server``/``HARMONY_SERVER``, or the embedded engine started for it."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from services.commands.embedded import embedded_engine
from services.core.http.service_url import UNIX_BASE_URL, socket_path

if TYPE_CHECKING:  # the SDK is imported when a command runs, not for every `harmony` command
    from openai import AsyncOpenAI, OpenAI

# Requests of a long recording may take a while; the engine's own deadlines bound them anyway.
REQUEST_TIMEOUT_S = 3600.0
# The SDK retries connection errors, 408, 429 (after Retry-After) and 5xx with exponential backoff.
MAX_RETRIES = 4
EMBEDDED_KEY = "harmony-embedded"


def add_server_arguments(parser: argparse.ArgumentParser, *, embedded: bool = True) -> None:
    where = " (default: $HARMONY_SERVER" + (", else an embedded engine started for this run)" if embedded else ")")
    parser.add_argument("--server", metavar="URL", default=os.environ.get("HARMONY_SERVER"),
                        help="the Harmony (or OpenAI-compatible) server, e.g. http://localhost:8000" + where)
    parser.add_argument("--api-key", metavar="KEY", default=os.environ.get("HARMONY_API_KEY"),
                        help="API key for the server (default: $HARMONY_API_KEY)")
    if embedded:
        parser.add_argument("--config", help="config of the embedded engine (default: harmony serve's default)")


def api_base(server: str) -> str:
    """The SDK's base URL: the server's URL with ``/v1`` (added when the user gave the bare server); a ``unix:``
    URL (the embedded engine's socket) as it is."""
    if socket_path(server) is not None:
        return server
    server = server.rstrip("/")
    return server if server.endswith("/v1") else server + "/v1"


@contextlib.contextmanager
def server_url(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The API's base URL and key: the server given, or an embedded engine that lives as long as the block (its
    URL is ``unix:/.../router.sock``, which ``async_client`` understands)."""
    if args.server:
        yield api_base(args.server), args.api_key or "none"
        return
    with embedded_engine(getattr(args, "config", None)) as url:
        yield api_base(url), args.api_key or EMBEDDED_KEY


def async_client(base_url: str, api_key: str) -> AsyncOpenAI:
    """The SDK's client for ``base_url``: an HTTP URL, or ``unix:/path`` (requests go over that Unix socket)."""
    from openai import AsyncOpenAI

    path, http_client = socket_path(base_url), None
    if path is not None:
        import httpx

        base_url = UNIX_BASE_URL + "/v1"
        http_client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=path), trust_env=False,
                                        timeout=REQUEST_TIMEOUT_S)
    return AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=REQUEST_TIMEOUT_S, max_retries=MAX_RETRIES,
                       # the SDK takes an httpx client at run time (openai/_httpx2.py) but annotates httpx2's only
                       http_client=http_client)  # type: ignore[arg-type]


def sync_client(base_url: str, api_key: str, http_client=None) -> OpenAI:
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=api_key, timeout=REQUEST_TIMEOUT_S, max_retries=MAX_RETRIES,
                  http_client=http_client)
