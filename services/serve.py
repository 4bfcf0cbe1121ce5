"""``harmony serve``: the router and every model service on one machine.

One process, one event loop, several uvicorn servers: the router listens on its TCP port; each
model service listens on a Unix domain socket in a private directory (0700, sockets 0600, removed
at exit), so only the router (and the engine's own user) can reach it, never another local user or
process that skips the router's checks. The router reaches the services over HTTP, exactly as it
does in Kubernetes (where they listen on TCP), so both run the same code paths. One process (rather
than one per service) keeps start-up and memory small on a laptop, and inference already runs in
worker threads that release the GIL (CTranslate2, ONNX Runtime). SIGTERM or SIGINT stops the
router's intake, lets in-flight requests finish (``server.drain_timeout_s``), then stops the services.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import uvicorn
from services.core.http_server import build_server, tcp_socket, unix_socket
from services.core.service_url import unix_url
from services.core.specs import ConfigError, HarmonyConfig, NamedModel, ServerSettings, load_config, parse_config
from services.model_services import ModelService, check_backends, service_for

__all__ = ["check_backends", "default_config", "run_serve", "serve"]

log = logging.getLogger("harmony.serve")


def default_config() -> HarmonyConfig:
    text = resources.files("services").joinpath("defaults/serve.yaml").read_text()
    import yaml

    return parse_config(yaml.safe_load(text), origin="default config")


def _server(app, settings: ServerSettings, log_level: str) -> uvicorn.Server:
    return build_server(app, settings, log_level, handle_signals=False)


def private_socket_dir() -> str:
    """A fresh directory only this user can enter (mkdtemp: 0700), in $XDG_RUNTIME_DIR when there is one,
    else the temporary directory; /tmp where that path is too long for a socket (about 100 bytes)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    where = runtime if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK) else tempfile.gettempdir()
    if len(os.path.join(where, "harmony-XXXXXXXX", "stt.sock")) > 100:
        where = "/tmp"
    path = tempfile.mkdtemp(prefix="harmony-", dir=where)
    os.chmod(path, 0o700)
    return path


@dataclass
class RunningService:
    name: str
    server: uvicorn.Server
    sock: socket.socket
    url: str


def start_model_services(config: HarmonyConfig, log_level: str, socket_dir: str) -> list[RunningService]:
    """One app per model service (speaker embedding and voice conversion share one), each on a Unix socket
    ``<socket_dir>/<service>.sock``."""
    by_service: dict[ModelService, list[NamedModel]] = defaultdict(list)
    for model in config.models:
        by_service[service_for(model.task)].append(model)
    from services.router.clients import POOL_SIZE

    # The router is a service's only client, and its pool bounds the connections: never refuse one it may open.
    settings = config.server.model_copy(update={"max_connections": max(config.server.max_connections, POOL_SIZE)})
    running = []
    for service, models in by_service.items():
        app = service.create_app(models, config.server.max_upload_bytes, config)
        path = os.path.join(socket_dir, f"{service.name}.sock")
        running.append(RunningService(service.name, _server(app, settings, log_level), unix_socket(path),
                                      unix_url(path)))
    return running


def endpoints_of(config: HarmonyConfig, running: list[RunningService]) -> dict[str, list[str]]:
    urls = {r.name: r.url for r in running}
    return {model.name: [urls[service_for(model.task).name]] for model in config.models}


async def serve(config: HarmonyConfig, log_level: str = "info", ready_file: Path | None = None) -> int:
    """Run everything in ``config`` (already checked by ``check_backends``) until SIGTERM or SIGINT."""
    socket_dir = private_socket_dir()
    try:
        return await _serve(config, log_level, ready_file, socket_dir)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


async def _serve(config: HarmonyConfig, log_level: str, ready_file: Path | None, socket_dir: str) -> int:
    from services.router.app import build_table, create_router_app

    services = start_model_services(config, log_level, socket_dir)
    log.debug("model services listen on Unix sockets in %s", socket_dir)
    router_sock = tcp_socket(config.server.host, config.server.port)
    router_app = create_router_app(config, build_table(config, endpoints_of(config, services)))
    router = _server(router_app, config.server, log_level)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    host, port = router_sock.getsockname()[:2]
    public = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '::') else host}:{port}"
    router_task = asyncio.create_task(router.serve(sockets=[router_sock]), name="router")
    service_tasks = [asyncio.create_task(s.server.serve(sockets=[s.sock]), name=f"service-{s.name}")
                     for s in services]
    print(f"Harmony is starting: {public}/v1 (loading models...)", flush=True)
    ready_task = asyncio.create_task(_announce_ready(config, router, services, public, ready_file))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, router_task, *service_tasks], return_when=asyncio.FIRST_COMPLETED)
    crashed = [t for t in done if t is not stopper]
    ready_task.cancel()

    print("Harmony is stopping: draining in-flight requests...", flush=True)
    router.should_exit = True
    await asyncio.gather(router_task, return_exceptions=True)
    for service in services:
        service.server.should_exit = True
    await asyncio.gather(*service_tasks, return_exceptions=True)
    stopper.cancel()
    print("Harmony stopped.", flush=True)
    failed = [t for t in crashed if t.exception() is not None or t.get_name() != "router"]
    return 1 if crashed and failed else 0


async def _announce_ready(config: HarmonyConfig, router: uvicorn.Server, services: list[RunningService], public: str,
                          ready_file: Path | None) -> None:
    while not (router.started and all(s.server.started for s in services)):
        await asyncio.sleep(0.05)
    print(f"Harmony is ready: {public}/v1 (models: {', '.join(m.name for m in config.models)})", flush=True)
    if config.auth.required:
        print("  API keys required: create one with `harmony keys create --name NAME` (same --config)", flush=True)
    if ready_file:
        ready_file.write_text(f"{public}\n")


def run_serve(config_path: str | None, host: str | None, port: int | None, log_level: str,
              ready_file: str | None = None, require_auth: bool = False) -> int:
    try:
        config = load_config(config_path) if config_path else default_config()
        if host is not None:
            config.server.host = host
        if port is not None:
            config.server.port = port
        if require_auth:
            config.auth.required = True
        check_backends(config)
    except ConfigError as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(serve(config, log_level, Path(ready_file) if ready_file else None))
    except OSError as exc:
        print(f"harmony: cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
