"""Every HTTP server the engine runs (the router, each model service; ``harmony serve`` and Kubernetes alike)
is built here, from ``ServerSettings``: uvicorn with the hardened protocol (head timeout, connection
limit, TCP_NODELAY, OpenAI-shaped errors: ``http_protocol.py``), body timeouts (``body_timeouts.py``),
the kernel backlog and keep-alive, and sockets that need no Nagle or that only their owner can reach.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
from collections.abc import Iterator

import uvicorn

from services.core.contracts.specs import ServerSettings
from services.core.http.body_timeouts import BodyTimeouts
from services.core.http.draining import BACKSTOP_S
from services.core.http.protocol import ConnectionLimits, HarmonyProtocol
from services.core.runtime.logs import reapply_levels, structured

__all__ = ["add_connection_arguments", "build_server", "connection_settings", "raise_open_files_limit", "tcp_socket",
           "unix_socket"]


class _NoSignalServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its caller (``harmony serve`` runs several)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_server(app, settings: ServerSettings, log_level: str = "info", *, handle_signals: bool = True,
                 host: str | None = None, port: int | None = None, own_log_handlers: bool = True) -> uvicorn.Server:
    """A uvicorn server for ``app``; ``serve()`` listens on ``host``/``port`` (default: the settings'),
    ``serve(sockets=[...])`` on sockets made by ``tcp_socket`` or ``unix_socket``. With ``own_log_handlers``
    uvicorn's loggers write to stderr (its default); without, they go to the root logger's handlers."""
    raise_open_files_limit()
    # the app's own drain (services/core/http/draining.py) answers what still runs at drain_timeout_s; uvicorn's
    # cancellation (a bare 500) is only the backstop (0: no limit)
    graceful_s = settings.drain_timeout_s + BACKSTOP_S if settings.drain_timeout_s else None
    limits = ConnectionLimits(header_timeout_s=settings.header_timeout_s, max_connections=settings.max_connections)
    config = uvicorn.Config(
        BodyTimeouts(app, settings.body_timeout_s, settings.body_min_bytes_per_s),
        host=host if host is not None else settings.host, port=port if port is not None else settings.port,
        http=HarmonyProtocol.with_limits(limits), interface="asgi3", lifespan="on", log_level=log_level,
        access_log=False, backlog=settings.backlog, timeout_keep_alive=settings.keep_alive_s,
        timeout_graceful_shutdown=graceful_s,  # type: ignore[arg-type]  # floats work
        log_config=uvicorn.config.LOGGING_CONFIG if own_log_handlers and not structured() else None)
    reapply_levels()  # uvicorn set its loggers' levels: the per-logger ones configured win
    return uvicorn.Server(config) if handle_signals else _NoSignalServer(config)


def tcp_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A bound TCP socket, made with IPPROTO_TCP: asyncio sets TCP_NODELAY only on connections accepted
    from such a socket (protocol 0 gives 40 ms per request on a kept-alive connection: Nagle against
    delayed ACK). The protocol sets it too, for sockets from elsewhere."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def unix_socket(path: str) -> socket.socket:
    """A Unix domain socket bound at ``path``, readable and writable by its owner alone (0600); put it in a
    0700 directory so that no one else can reach it even between bind and chmod."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    return sock


def raise_open_files_limit() -> None:
    """Every connection is a file descriptor: lift the soft limit to the hard one (often 1024 against 2^20)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def add_connection_arguments(parser: argparse.ArgumentParser, defaults: ServerSettings) -> None:
    """The slow- and broken-client settings of ServerSettings, for ``router_main`` and ``service_main``."""
    parser.add_argument("--header-timeout", type=float, default=defaults.header_timeout_s,
                        help="seconds a connection may take to send a request head")
    parser.add_argument("--body-timeout", type=float, default=defaults.body_timeout_s,
                        help="seconds to wait for the next part of a request body")
    parser.add_argument("--body-min-rate", type=float, default=defaults.body_min_bytes_per_s,
                        help="bytes per second a request body must average (0: no minimum)")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)


def connection_settings(args: argparse.Namespace) -> dict:
    return {"header_timeout_s": args.header_timeout, "body_timeout_s": args.body_timeout,
            "body_min_bytes_per_s": args.body_min_rate, "max_connections": args.max_connections}
