"""The router in Kubernetes: the public API, with its models from the operator's ConfigMaps (with ``--watch-models``
watched through the API in each namespace served: ``--model-namespaces`` or ``--model-namespace-selector``; else
the mounted file) and, with ``--watch-endpoints``, each model's ready pods from its Service's EndpointSlices.

    python -m services.router_main --models-file /etc/harmony/models.yaml --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from services.core.contracts.specs import AuditSettings, AuthSettings, DatabaseSettings, HarmonyConfig, ServerSettings
from services.core.http.draining import drain_on_signal
from services.core.http.server import add_connection_arguments, build_server, connection_settings
from services.core.runtime import tracing
from services.core.runtime.logs import add_log_arguments, configure_from
from services.router.app import create_router_app
from services.router.cluster.sources import cluster_sources
from services.router.cluster.wake import SERVICE_ACCOUNT, DemandLeases, ModelWaker
from services.router.routing import ModelTable


async def serve(config: HarmonyConfig, models_file: str, poll_s: float, log_level: str,
                wake_models: bool = False, watch_endpoints: bool = False, watch_models: bool = False,
                model_namespaces: list[str] | None = None, namespace_selector: str | None = None) -> None:
    table = ModelTable()
    # The models: the operator's ConfigMaps watched through the API in every namespace served, else the mounted
    # file; per-pod balancing: each model's ready pods from its Service's EndpointSlices (services.router.cluster).
    own = (SERVICE_ACCOUNT / "namespace").read_text().strip() if watch_endpoints or watch_models else None
    sources = cluster_sources(table, models_file, poll_s, watch_models=watch_models, watch_endpoints=watch_endpoints,
                              namespaces=model_namespaces, selector=namespace_selector, own=own)
    # Scale from zero: report requests for models that scale to zero on their demand Leases (the service account
    # may get, create, update and patch Leases; it never writes SpeechModels).
    annotator = DemandLeases.in_cluster() if wake_models else None
    if annotator is not None:  # a model of another namespace has its Lease there (the namespace of its SpeechModel)
        annotator.namespace_of = sources.namespace_of
    waker = ModelWaker(annotator) if annotator else None
    app = create_router_app(config, table, waker=waker)
    server = build_server(app, config.server, log_level)
    drain_on_signal(server, app.state.drain, config.server.drain_timeout_s)  # at its end: 503 for what still runs
    tasks = [asyncio.create_task(loop(), name=name) for name, loop in sources.loops()]
    if waker:
        tasks.append(asyncio.create_task(waker.run(), name="wake-reports"))
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if waker and annotator:
            await waker.aclose()
            await annotator.aclose()
        await sources.aclose()


def main(argv: list[str] | None = None) -> int:
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(prog="python -m services.router_main", description=__doc__.split("\n")[0])
    parser.add_argument("--models-file", default="/etc/harmony/models.yaml")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between checks of the file")
    parser.add_argument("--max-upload-bytes", type=int, default=defaults.max_upload_bytes)
    parser.add_argument("--service-timeout", type=float, default=defaults.service_timeout_s)
    parser.add_argument("--spool-budget-bytes", type=int, default=defaults.spool_budget_bytes,
                        help="request bodies held at once (keep below the /tmp volume's size); past it 503 spool_full")
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout_s)
    add_connection_arguments(parser, defaults)
    add_log_arguments(parser)
    parser.add_argument("--require-auth", action="store_true", help="every API request needs an API key")
    parser.add_argument("--realtime-sessions-per-key", type=int, default=AuthSettings().realtime_sessions_per_key,
                        help="open realtime sessions one API key may hold, across replicas")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: $HARMONY_DATABASE_URL, else SQLite)")
    parser.add_argument("--audit", default="stdout", choices=["stdout", "file", "database", "none"])
    parser.add_argument("--audit-file", help="the file of --audit file")
    parser.add_argument("--wake-models", action="store_true",
                        help="report requests for models that scale to zero to the operator (SpeechModel annotation "
                             "harmony.dev/last-request), so it wakes them and knows when they are idle")
    parser.add_argument("--watch-endpoints", action="store_true",
                        help="balance over each model's ready pods, watched in its Service's EndpointSlices (needs "
                             "get, list, watch on endpointslices in this namespace), instead of the Service's URL")
    parser.add_argument("--watch-models", action="store_true",
                        help="watch the operator's ConfigMaps through the API (changes seen within a second; needs "
                             "get, list, watch on configmaps harmony-router-models) instead of polling --models-file")
    parser.add_argument("--model-namespaces", default="",
                        help="comma-separated namespaces whose SpeechModels this router serves (default: its own)")
    parser.add_argument("--model-namespace-selector", default=None,
                        help="serve the SpeechModels of every namespace whose labels match this selector (needs "
                             "cluster-wide reads: namespaces, configmaps, endpointslices)")
    args = parser.parse_args(argv)

    config = HarmonyConfig(server=ServerSettings(
        host=args.host, port=args.port, max_upload_bytes=args.max_upload_bytes,
        service_timeout_s=args.service_timeout, drain_timeout_s=args.drain_timeout,
        spool_budget_bytes=args.spool_budget_bytes, **connection_settings(args)),
        auth=AuthSettings(required=args.require_auth, realtime_sessions_per_key=args.realtime_sessions_per_key),
        database=DatabaseSettings(url=args.database_url),
        audit=AuditSettings(sink=args.audit, path=args.audit_file))
    log_level = configure_from(args.log_format, args.log_level)
    tracing.configure_from_env("harmony-router")  # spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
    asyncio.run(serve(config, args.models_file, args.poll_interval, log_level, args.wake_models,
                      args.watch_endpoints, args.watch_models,
                      [ns.strip() for ns in args.model_namespaces.split(",") if ns.strip()],
                      args.model_namespace_selector))
    return 0


if __name__ == "__main__":
    sys.exit(main())
