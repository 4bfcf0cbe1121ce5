"""Where a router in Kubernetes learns its models and their pods, assembled from the command line's choices.

- ``watch_models`` (the chart's default): the operator's ConfigMaps watched through the API, in every namespace
  served (``namespaces`` listed, or those ``selector`` takes, else the router's own); a change is in the table
  within a second. Without it, the mounted ConfigMap file polled (one namespace, the kubelet's minute of delay).
- ``watch_endpoints``: each model's ready pods from the EndpointSlices of the same namespaces.
- ``selector``: the Namespaces watched for their labels, so namespaces that come to match are served at once.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.router.cluster import api_watch
from services.router.cluster.api_watch import ApiWatch
from services.router.cluster.config_map import ClusterSync, NamespacedModels
from services.router.cluster.namespaces import NamespaceScope
from services.router.cluster.pods import PodDirectory
from services.router.cluster.slice_watch import SliceWatch
from services.router.routing import ModelTable


@dataclass
class ClusterSources:
    table: ModelTable
    namespace: str  # the router's own
    models: NamespacedModels | None = None  # the API's ConfigMaps (None: the file)
    sync: ClusterSync | None = None  # the mounted file
    watches: list[ApiWatch] = field(default_factory=list)
    client: httpx.AsyncClient | None = None  # the API server's, shared by the watches

    def namespace_of(self, model: str) -> str | None:
        """The namespace of the SpeechModel served as ``model``."""
        if self.models is None:
            return self.namespace if model in self.table.models else None
        return self.models.namespace_of(model)

    def loops(self) -> list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]]:
        """The background loops to run while the router serves (name, coroutine function)."""
        loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            (f"{w.what.lower()}-watch-{i}", w.run) for i, w in enumerate(self.watches)]
        return loops + ([("cluster-sync", self.sync.run)] if self.sync else [])

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def namespace_scope(own: str, namespaces: list[str], selector: str | None) -> NamespaceScope:
    if selector is not None:
        return NamespaceScope(selector=selector)
    return NamespaceScope(names=frozenset(namespaces or [own]))


def cluster_sources(table: ModelTable, models_file: str, poll_s: float, *, watch_models: bool = False,
                    watch_endpoints: bool = False, namespaces: list[str] | None = None,
                    selector: str | None = None, own: str | None = None,
                    client: httpx.AsyncClient | None = None, token_file: Path | None = None) -> ClusterSources:
    """The router's sources as the flags ask. In cluster (no ``client``): the service account's token, CA and
    namespace; a test passes its API server's ``client`` and the router's namespace ``own``."""
    uses_api = watch_models or watch_endpoints or bool(namespaces) or selector is not None
    if uses_api and client is None:
        client, token_file = api_watch.in_cluster_client(), api_watch.SERVICE_ACCOUNT / "token"
    own = own or (api_watch.own_namespace() if uses_api else "")
    scope = namespace_scope(own, namespaces or [], selector)
    pods = PodDirectory(table, own) if watch_endpoints else None
    sources = ClusterSources(table, own, client=client)
    if pods is not None and client is not None:
        for ns in [None] if scope.cluster_wide else sorted(scope.names):
            sources.watches.append(SliceWatch(client, ns, _bound(pods.reset, ns), pods.event, token_file))
    if client is not None and (watch_models or selector is not None):  # a list alone scopes the EndpointSlices
        sources.models = NamespacedModels(table, scope, pods)
        sources.watches.extend(sources.models.watches(client, token_file))
        if scope.cluster_wide:
            scope.on_change = sources.models.apply
            sources.watches.append(scope.watch(client, token_file))
    else:
        sources.sync = ClusterSync(table, models_file, poll_s, pods=pods)
        sources.sync.reload()
    return sources


def _bound(reset: Callable[..., None], namespace: str | None) -> Callable[[list], None]:
    return lambda slices: reset(slices, namespace)
