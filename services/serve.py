"""``harmony serve``: the router and every model service on one machine.

One process, one event loop, several uvicorn servers: each model service listens
on its own loopback port and the router reaches it over HTTP, exactly as it does
in Kubernetes, so the embedded default and a cluster run the same code paths.
One process (rather than one per service) keeps start-up and memory small on a
laptop, and inference already runs in worker threads that release the GIL
(CTranslate2, ONNX Runtime). SIGTERM or SIGINT stops the router's intake, lets
in-flight requests finish (``server.drain_timeout_s``), then stops the services.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import socket
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path

import uvicorn
from services.core.specs import ConfigError, HarmonyConfig, NamedModel, Task, load_config, parse_config

log = logging.getLogger("harmony.serve")

SERVICE_FACTORIES = {
    Task.stt: ("services.stt.app", "create_stt_app", "BACKENDS"),
    Task.tts: ("services.tts.app", "create_tts_app", "BACKENDS"),
    Task.vad: ("services.vad.app", "create_vad_app", "BACKENDS"),
    Task.embed: ("services.vc.app", "create_vc_app", "BACKENDS"),
    Task.vc: ("services.vc.app", "create_vc_app", "BACKENDS"),
}


def default_config() -> HarmonyConfig:
    text = resources.files("services").joinpath("defaults/serve.yaml").read_text()
    import yaml

    return parse_config(yaml.safe_load(text), origin="default config")


def check_backends(config: HarmonyConfig) -> None:
    """Fail at start, naming the field, for a task or backend this build cannot serve."""
    for index, model in enumerate(config.models):
        if model.task not in SERVICE_FACTORIES:
            raise ConfigError(f"models[{index}].task: no service for task '{model.task.value}' in this build "
                              f"(available: {', '.join(t.value for t in SERVICE_FACTORIES)})")
        module, _, table = SERVICE_FACTORIES[model.task]
        backends = getattr(importlib.import_module(module), table)
        if model.backend not in backends:
            raise ConfigError(f"models[{index}].backend: unknown {model.task.value} backend '{model.backend}' "
                              f"(available: {', '.join(backends)})")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to ``serve``."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


def _loopback_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _server(app, sock: socket.socket, drain_s: float, log_level: str) -> _Server:
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=drain_s or None,
                            access_log=False, lifespan="on", timeout_keep_alive=30)
    return _Server(config)


async def serve(config: HarmonyConfig, log_level: str = "info", ready_file: Path | None = None) -> int:
    """Run everything in ``config`` (already checked by ``check_backends``) until SIGTERM or SIGINT."""
    from services.router.app import build_table, create_router_app

    # one service per factory: speaker embedding and voice conversion share the voice service
    by_service: dict[tuple[str, str, str], list[NamedModel]] = defaultdict(list)
    for model in config.models:
        by_service[SERVICE_FACTORIES[model.task]].append(model)

    services: list[tuple[str, _Server, socket.socket]] = []
    endpoints: dict[str, list[str]] = {}
    service_urls: dict[str, str] = {}
    for (module, factory, _), models in by_service.items():
        service_name = module.split(".")[1]
        app = getattr(importlib.import_module(module), factory)(models, config.server.max_upload_bytes)
        sock = _loopback_socket()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        for model in models:
            endpoints[model.name] = [url]
        services.append((service_name, _server(app, sock, config.server.drain_timeout_s, log_level), sock))
        service_urls[service_name] = url

    router_sock = _loopback_socket(config.server.host, config.server.port)
    router_app = create_router_app(config, build_table(config, endpoints))
    router = _server(router_app, router_sock, config.server.drain_timeout_s, log_level)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    host, port = router_sock.getsockname()[:2]
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    router_task = asyncio.create_task(router.serve(sockets=[router_sock]), name="router")
    service_tasks = [asyncio.create_task(s.serve(sockets=[sock]), name=f"service-{name}")
                     for name, s, sock in services]
    print(f"Harmony is starting: http://{shown_host}:{port}/v1 (loading models...)", flush=True)

    async def announce_ready() -> None:
        while not (router.started and all(s.started for _, s, _ in services)):
            await asyncio.sleep(0.05)
        print(f"Harmony is ready: http://{shown_host}:{port}/v1 "
              f"(models: {', '.join(m.name for m in config.models)})", flush=True)
        for task, url in service_urls.items():
            print(f"  {task} service: {url}", flush=True)
        if ready_file:
            ready_file.write_text(f"http://{shown_host}:{port}\n")

    ready_task = asyncio.create_task(announce_ready())
    everything = [router_task, *service_tasks]
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *everything], return_when=asyncio.FIRST_COMPLETED)
    crashed = [t for t in done if t is not stopper]
    ready_task.cancel()

    print("Harmony is stopping: draining in-flight requests...", flush=True)
    router.should_exit = True
    await asyncio.gather(router_task, return_exceptions=True)
    for _, server, _ in services:
        server.should_exit = True
    await asyncio.gather(*service_tasks, return_exceptions=True)
    stopper.cancel()
    print("Harmony stopped.", flush=True)
    failed = [t for t in crashed if t.exception() is not None or t.get_name() != "router"]
    return 1 if crashed and failed else 0


def run_serve(config_path: str | None, host: str | None, port: int | None, log_level: str,
              ready_file: str | None = None) -> int:
    try:
        config = load_config(config_path) if config_path else default_config()
        if host is not None:
            config.server.host = host
        if port is not None:
            config.server.port = port
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
