"""``harmony serve``: the router and every model service on one machine.

One process, one event loop, several uvicorn servers: the router listens on its TCP port; each
model service listens on a Unix domain socket in a private directory (0700, sockets 0600, removed
at exit), so only the router (and the engine's own user) can reach it, never another local user or
process that skips the router's checks. The router reaches the services over HTTP, exactly as it
does in Kubernetes (where they listen on TCP), so both run the same code paths. One process (rather
than one per service) keeps start-up and memory small on a laptop, and inference already runs in
worker threads that release the GIL (CTranslate2, ONNX Runtime). SIGTERM or SIGINT stops the
router's intake and lets in-flight requests finish for up to ``server.drain_timeout_s`` (5 s); what still runs then
is answered 503 ``shutting_down`` (a stream is cut), the services stop and give up their batches' abandoned work,
and the process exits at most ``EXIT_GRACE_S`` after the drain time, whatever still computes (``ExitDeadline``); a
second signal exits at once.

The same engine runs inside another program (``harmony transcribe`` without a server:
``services/commands/embedded.py``) with a ``Hosting``: stopped by an event rather than by signals (which only a
main thread may handle), its router on a Unix socket in the same private directory, its messages and uvicorn's
logs sent to logging.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from services.core.contracts.specs import (
    ConfigError,
    HarmonyConfig,
    NamedModel,
    ServerSettings,
    WyomingSettings,
    load_config,
    parse_config,
)
from services.core.http.server import build_server, tcp_socket, unix_socket
from services.core.http.service_url import unix_url
from services.core.runtime import tracing
from services.core.runtime.exit_deadline import ExitDeadline
from services.core.runtime.logs import configure_from, say_json, structured
from services.model_services import ModelService, check_backends, service_for

__all__ = ["Hosting", "check_backends", "default_config", "run_serve", "serve"]

log = logging.getLogger("harmony.serve")

SERVICE_STOP_S = 1.0  # the services' own graceful wait, once the router (their only client) has stopped
EXIT_GRACE_S = 3.0    # `harmony serve` ends at most this long after its drain time, whatever still computes


def with_named_models(config: HarmonyConfig, references: list[str], replace: bool) -> HarmonyConfig:
    """``config`` serving the models ``references`` name (fetched now, with a progress bar), alone when ``replace``
    (the default config's routes, which use its models, go too)."""
    from services.commands.pull import Bar
    from services.core.runtime.weights import WeightsError
    from services.weights.named_models import models_from_references
    from services.weights.references import ReferenceError

    kept = [] if replace else list(config.models)
    taken = {name for model in kept for name in (model.name, *model.aliases)}
    try:
        with Bar() as bar:
            named = models_from_references(references, bar.progress, taken)
    except (WeightsError, ReferenceError) as exc:
        raise ConfigError(f"--model: {exc}") from None
    data = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["models"] = [m.model_dump(mode="json", by_alias=True, exclude_none=True) for m in kept + named]
    if replace:
        data["routes"] = []
    return parse_config(data, origin="--model")


def prefetch(config: HarmonyConfig) -> None:
    """The config's hf, url and oci weights fetched before the engine starts, with a progress bar (the services
    then find them in the cache). A model that cannot be fetched is only reported here: its service tries again
    and says why on /readyz, and the other models serve."""
    remote = [model for model in config.models if model.source.remote]
    if not remote:
        return
    from services.commands.pull import Bar, pull_one
    from services.weights.cache import ModelCache

    cache = ModelCache.default()
    with Bar() as bar:
        for model in remote:
            pull_one(model.name, model.source, cache, None, bar)


def default_config() -> HarmonyConfig:
    text = resources.files("services").joinpath("defaults/serve.yaml").read_text()
    import yaml

    return parse_config(yaml.safe_load(text), origin="default config")


def _say(message: str) -> None:
    print(message, flush=True)


@dataclass
class Hosting:
    """How ``serve`` runs. The defaults are ``harmony serve``'s: SIGTERM and SIGINT stop it (so it must run on the
    main thread), the router listens on the config's host and port, messages are printed, uvicorn logs to stderr."""

    ready_file: Path | None = None                      # the router's URL is written here once every model is loaded
    stop: asyncio.Event | None = None                   # set it to stop the engine; no signal handler is installed
    router_on_unix_socket: bool = False                 # ``<socket dir>/router.sock``: reachable by this user alone
    on_ready: Callable[[str], None] | None = None       # called with the router's URL once every model is loaded
    say: Callable[[str], None] = field(default=_say)    # the starting/ready/stopping messages
    uvicorn_log_handlers: bool = True                   # False: uvicorn's logs go to the root logger's handlers


def _server(app, settings: ServerSettings, log_level: str, hosting: Hosting) -> uvicorn.Server:
    return build_server(app, settings, log_level, handle_signals=False,
                        own_log_handlers=hosting.uvicorn_log_handlers)


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
    app: Any
    server: uvicorn.Server
    sock: socket.socket
    url: str


def start_model_services(config: HarmonyConfig, log_level: str, socket_dir: str,
                         hosting: Hosting | None = None) -> list[RunningService]:
    """One app per model service (speaker embedding and voice conversion share one), each on a Unix socket
    ``<socket_dir>/<service>.sock``."""
    by_service: dict[ModelService, list[NamedModel]] = defaultdict(list)
    for model in config.models:
        by_service[service_for(model.task)].append(model)
    from services.router.upstream.clients import POOL_SIZE

    # The router is a service's only client, and its pool bounds the connections: never refuse one it may open.
    settings = config.server.model_copy(update={"max_connections": max(config.server.max_connections, POOL_SIZE)})
    running = []
    for service, models in by_service.items():
        app = service.create_app(models, config.server.max_upload_bytes, config)
        path = os.path.join(socket_dir, f"{service.name}.sock")
        running.append(RunningService(service.name, app, _server(app, settings, log_level, hosting or Hosting()),
                                      unix_socket(path), unix_url(path)))
    return running


def endpoints_of(config: HarmonyConfig, running: list[RunningService]) -> dict[str, list[str]]:
    urls = {r.name: r.url for r in running}
    return {model.name: [urls[service_for(model.task).name]] for model in config.models}


async def serve(config: HarmonyConfig, log_level: str = "info", ready_file: Path | None = None,
                hosting: Hosting | None = None) -> int:
    """Run everything in ``config`` (already checked by ``check_backends``) until SIGTERM or SIGINT (or, with a
    ``hosting`` that has one, until its ``stop`` event is set)."""
    hosting = hosting or Hosting(ready_file=ready_file)
    socket_dir = private_socket_dir()
    try:
        return await _serve(config, log_level, hosting, socket_dir)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _router_listener(config: HarmonyConfig, hosting: Hosting, socket_dir: str) -> tuple[socket.socket, str]:
    """The router's socket and its public URL: the config's host and port, or a Unix socket beside the services'."""
    if hosting.router_on_unix_socket:
        path = os.path.join(socket_dir, "router.sock")
        return unix_socket(path), unix_url(path)
    sock = tcp_socket(config.server.host, config.server.port)
    host, port = sock.getsockname()[:2]
    return sock, f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '::') else host}:{port}"


def _stop_event(hosting: Hosting, drain_s: float) -> asyncio.Event:
    """The hosting's stop event, or one set by SIGTERM and SIGINT: the process then ends by the drain time plus
    ``EXIT_GRACE_S`` (no deadline with no drain limit, ``drain_timeout_s: 0``), or at once at a second Ctrl-C (a
    repeated SIGTERM changes nothing)."""
    if hosting.stop is not None:
        return hosting.stop
    stop, loop, deadline = asyncio.Event(), asyncio.get_running_loop(), ExitDeadline()

    def signalled(sig: signal.Signals) -> None:
        if stop.is_set() and sig == signal.SIGINT:
            deadline.now()
        stop.set()
        if drain_s:
            deadline.arm(drain_s + EXIT_GRACE_S)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signalled, sig)
    return stop


async def _serve(config: HarmonyConfig, log_level: str, hosting: Hosting, socket_dir: str) -> int:
    from services.router.app import build_table, create_router_app

    traced = not tracing.enabled() and tracing.configure_from_env("harmony")  # OTEL_EXPORTER_OTLP_ENDPOINT set
    services = start_model_services(config, log_level, socket_dir, hosting)
    log.debug("model services listen on Unix sockets in %s", socket_dir)
    router_sock, public = _router_listener(config, hosting, socket_dir)
    router_app = create_router_app(config, build_table(config, endpoints_of(config, services)))
    router = _server(router_app, config.server, log_level, hosting)
    stop = _stop_event(hosting, config.server.drain_timeout_s)
    wyoming = await _start_wyoming(config, router_sock, hosting)

    router_task = asyncio.create_task(router.serve(sockets=[router_sock]), name="router")
    service_tasks = [asyncio.create_task(s.server.serve(sockets=[s.sock]), name=f"service-{s.name}")
                     for s in services]
    hosting.say(f"Harmony is starting: {_api(public)} (loading models...)")
    ready_task = asyncio.create_task(_announce_ready(config, router, services, public, hosting))
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, router_task, *service_tasks], return_when=asyncio.FIRST_COMPLETED)
    crashed = [t for t in done if t is not stopper]
    ready_task.cancel()

    await _stop(config, router, router_app, router_task, services, service_tasks, wyoming, hosting)
    stopper.cancel()
    if traced:
        tracing.shutdown()  # the last spans exported
    hosting.say("Harmony stopped.")
    failed = [t for t in crashed if t.exception() is not None or t.get_name() != "router"]
    return 1 if crashed and failed else 0


async def _stop(config: HarmonyConfig, router: uvicorn.Server, router_app: Any, router_task: asyncio.Task,
                services: list[RunningService], service_tasks: list[asyncio.Task], wyoming: _Wyoming | None,
                hosting: Hosting) -> None:
    """The router's intake stops and its requests drain (``server.drain_timeout_s``: then the rest is answered 503
    ``shutting_down``), then the services stop: their only client has, so they wait no longer than
    ``SERVICE_STOP_S`` for what the router left, and their batchers give up the work nobody awaits."""
    drain_s = config.server.drain_timeout_s
    hosting.say("Harmony is stopping: draining in-flight requests" + (f" (up to {drain_s:g} s)..." if drain_s else
                                                                      "..."))
    router_app.state.drain.start(drain_s or None)
    if wyoming is not None:
        await wyoming.stop()
    router.should_exit = True
    await asyncio.gather(router_task, return_exceptions=True)
    for service in services:
        # uvicorn annotates whole seconds; it hands the value to asyncio.timeout, which takes floats
        service.server.config.timeout_graceful_shutdown = SERVICE_STOP_S  # type: ignore[assignment]
        service.server.should_exit = True
    await asyncio.gather(*service_tasks, return_exceptions=True)


class ListenError(OSError):
    """A listener other than the router's could not be opened; ``where`` names it."""

    def __init__(self, errno: int | None, strerror: str | None, where: str) -> None:
        super().__init__(errno, strerror)
        self.where = where


class _Wyoming:
    """The Wyoming listener and its optional mDNS announcement, while ``serve`` runs."""

    def __init__(self, service, announcement) -> None:
        self.service = service
        self.announcement = announcement

    async def stop(self) -> None:
        if self.announcement is not None:
            try:
                await self.announcement.stop()
            except Exception:  # noqa: BLE001 - a failed goodbye on the network does not stop the engine's stop
                log.warning("the Wyoming mDNS announcement did not end cleanly", exc_info=True)
        await self.service.stop()


async def _start_wyoming(config: HarmonyConfig, router_sock: socket.socket, hosting: Hosting) -> _Wyoming | None:
    """``config.wyoming``'s listener (``--wyoming-port``), a client of the router, and its announcement."""
    if config.wyoming.port is None:
        return None
    from services.wyoming.server import open_wyoming

    try:
        service = open_wyoming(config, router_sock)
    except OSError as exc:
        where = f"{config.wyoming.host or config.server.host}:{config.wyoming.port} (Wyoming)"
        raise ListenError(exc.errno, exc.strerror, where) from exc
    await service.start()
    host, port = service.address
    hosting.say(f"Wyoming protocol (Home Assistant): tcp://{host}:{port}")
    announcement = None
    if config.wyoming.zeroconf:
        from services.wyoming.announce import Announcement, announced_address, service_info

        try:
            announcement = Announcement(service_info(config.wyoming.zeroconf_name, announced_address(host), port))
            await announcement.start()
        except Exception as exc:  # noqa: BLE001 - no multicast here: the protocol still serves
            log.warning("the Wyoming mDNS announcement failed (add the integration by host and port): %s", exc)
            announcement = None
    return _Wyoming(service, announcement)


def _api(public: str) -> str:
    return public + "/v1" if public.startswith("http") else public


async def _announce_ready(config: HarmonyConfig, router: uvicorn.Server, services: list[RunningService], public: str,
                          hosting: Hosting) -> None:
    from services.core.http.service_app import models_settled

    while not (router.started and all(s.server.started and models_settled(s.app) for s in services)):
        await asyncio.sleep(0.05)
    hosting.say(f"Harmony is ready: {_api(public)} (models: {', '.join(m.name for m in config.models)})")
    if config.auth.required:
        hosting.say("  API keys required: create one with `harmony keys create --name NAME` (same --config)")
    if hosting.ready_file:
        hosting.ready_file.write_text(f"{public}\n")
    if hosting.on_ready:
        hosting.on_ready(public)


def wyoming_settings(settings: WyomingSettings, flags: dict) -> WyomingSettings:
    """The config's ``wyoming`` section with the ``--wyoming-*`` flags over it; a bad value names its flag."""
    try:
        return WyomingSettings.model_validate({**settings.model_dump(exclude_unset=True), **flags})
    except ValidationError as exc:
        lines = [f"  --wyoming-{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("invalid Wyoming flags\n" + "\n".join(lines)) from None


def run_serve(config_path: str | None, host: str | None, port: int | None, log_level: str | None,
              ready_file: str | None = None, require_auth: bool = False, wyoming: dict | None = None,
              models: list[str] | None = None, log_format: str | None = None) -> int:
    """``wyoming``: the ``--wyoming-*`` flags given (port, host, zeroconf, zeroconf_name), over the config's;
    ``models``: the ``--model`` references, served alone (or added to the ``config_path``'s models)."""
    try:
        config = load_config(config_path) if config_path else default_config()
        if models:
            config = with_named_models(config, models, replace=not config_path)
        else:
            prefetch(config)
        if wyoming:
            config.wyoming = wyoming_settings(config.wyoming, wyoming)
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
    try:
        root_level = configure_from(log_format, log_level, config.server.log_format, config.server.log_level)
    except ValueError as exc:  # the config's or the environment's log settings
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    hosting = Hosting(ready_file=Path(ready_file) if ready_file else None,
                      say=say_json if structured() else _say)
    try:
        code = asyncio.run(serve(config, root_level, hosting=hosting))
    except OSError as exc:
        where = exc.where if isinstance(exc, ListenError) else f"{config.server.host}:{config.server.port}"
        print(f"harmony: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 1
    return code  # the CLI then ends the process without the interpreter's teardown (exit_deadline.ExitWhenServed)
