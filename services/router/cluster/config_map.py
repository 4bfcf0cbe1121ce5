"""Keep the router's model table in sync with the operator's ConfigMaps (watched through the API, or one mounted as a
file).

The file (``harmony-router-models``, key ``models.yaml``) is a
:class:`services.core.contracts.wire.RouterModels`, written by the operator: every SpeechModel
with its spec and endpoint URL, and every ready SpeechRoute::

    models:
      - {name: whisper-base, endpoint: "http://harmony-whisper-base.ns.svc.cluster.local:8080", spec: {...}}
    routes:
      - {name: ..., spec: {...}}

The operator writes one such ConfigMap in every namespace it serves. In a cluster the router watches them through
the API (:class:`NamespacedModels` and its watches: the ConfigMaps of each namespace it serves, or of every
namespace that a label selector takes, :mod:`services.router.cluster.namespaces`), so a new model is routable
within a second of the operator's write, and models of many namespaces share one router. Without API access
(``harmony serve``, or a router without ``--watch-models``) it reads the file the ConfigMap is mounted as: the
kubelet swaps it in place when it changes (about a minute later); :class:`ClusterSync` polls the file and applies
what changed. A ConfigMap that cannot be read or parsed leaves its models as they were (and says so in the log), so a
bad write never empties a running router. With an EndpointSlice
watch (``pods``, :mod:`services.router.cluster.pods`) a model's replicas are the ready pods of its Service
instead of the Service's one URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import ValidationError

from services.core.contracts.specs import NamedModel, NamedRoute
from services.core.contracts.wire import RouterModels
from services.router.cluster.api_watch import ApiWatch, collection
from services.router.cluster.namespaces import NamespaceScope
from services.router.cluster.pods import PodDirectory
from services.router.routing import ModelTable

log = logging.getLogger("harmony.router.cluster")

CONFIGMAP = "harmony-router-models"  # the operator's (operator: names.ROUTER_CONFIGMAP), one per namespace
KEY = "models.yaml"


@dataclass(frozen=True)
class ClusterModels:
    """The models file resolved for the table: each model with its endpoint URL, and the routes."""

    models: list[tuple[NamedModel, str]]  # spec, endpoint URL ("": no ready replica)
    routes: list[NamedRoute]
    endpoints: dict[str, str] = field(default_factory=dict)  # model name -> its Service's URL, ready or not

    @classmethod
    def from_wire(cls, wire: RouterModels) -> ClusterModels:
        # A model that scales to zero with no ready replica gets no URL: its requests wait for one.
        return cls([(entry.named(), "" if entry.ready_replicas == 0 else entry.endpoint) for entry in wire.models],
                   [entry.named() for entry in wire.routes], {entry.name: entry.endpoint for entry in wire.models})


def parse_models(text: str) -> ClusterModels:
    """Parse the file the operator wrote; raises yaml.YAMLError or pydantic.ValidationError for a bad one."""
    return ClusterModels.from_wire(RouterModels.from_yaml(text))


def apply(table: ModelTable, state: ClusterModels, pods: PodDirectory | None = None) -> None:
    """Make ``table`` hold exactly ``state``; replicas of models that stay keep their counters. With ``pods`` (the
    EndpointSlice watch), a model's replicas are its ready pods rather than its Service's URL."""
    wanted = {spec.name for spec, _ in state.models}
    for name in list(table.models):
        if name not in wanted:
            table.remove_model(name)
    if pods is not None:
        pods.follow((spec, state.endpoints.get(spec.name, url)) for spec, url in state.models)
    for spec, url in state.models:
        urls = [url] if url else []
        table.set_model(spec, pods.replicas(spec.name, urls) if pods is not None else urls)
    routes = {route.name for route in state.routes}
    for name in list(table.routes):
        if name not in routes:
            table.routes.pop(name, None)
    for route in state.routes:
        table.set_route(route)


class ClusterSync:
    """Reload ``path`` into ``table`` whenever its content changes."""

    def __init__(self, table: ModelTable, path: str | Path, interval_s: float = 2.0,
                 pods: PodDirectory | None = None) -> None:
        self.table = table
        self.pods = pods
        self.path = Path(path)
        self.interval_s = interval_s
        self._digest: str | None = None

    def reload(self) -> bool:
        """Apply the file if it changed; True when the table was updated."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""  # the operator has not written it yet: no models
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return False
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return False
        try:
            state = parse_models(text)
        except (yaml.YAMLError, ValidationError) as exc:
            log.error("ignoring %s, which is not a valid models file: %s", self.path, exc)
            self._digest = digest
            return False
        apply(self.table, state, self.pods)
        self._digest = digest
        log.info("models from %s: %s", self.path, ", ".join(s.name for s, _ in state.models) or "none")
        return True

    async def run(self) -> None:
        while True:
            self.reload()
            await asyncio.sleep(self.interval_s)


def merge(states: dict[str, ClusterModels]) -> tuple[ClusterModels, list[str]]:
    """The models and routes of several namespaces in one table; a name taken twice goes to the first namespace
    in alphabetical order. The merged state, and what was left out (for the log)."""
    models: list[tuple[NamedModel, str]] = []
    routes: list[NamedRoute] = []
    endpoints: dict[str, str] = {}
    owner: dict[str, str] = {}
    dropped = []
    for namespace in sorted(states):
        state = states[namespace]
        for spec, url in state.models:
            if spec.name in owner:
                dropped.append(f"model {spec.name} of {namespace} (also in {owner[spec.name]})")
                continue
            owner[spec.name] = namespace
            models.append((spec, url))
            endpoints[spec.name] = state.endpoints.get(spec.name, url)
        for route in state.routes:
            if route.name in owner:
                dropped.append(f"route {route.name} of {namespace} (also in {owner[route.name]})")
                continue
            owner[route.name] = namespace
            routes.append(route)
    return ClusterModels(models, routes, endpoints), dropped


class NamespacedModels:
    """The table from the operator's ConfigMaps of the namespaces in ``scope``, as a watch reports them."""

    def __init__(self, table: ModelTable, scope: NamespaceScope, pods: PodDirectory | None = None) -> None:
        self.table = table
        self.scope = scope
        self.pods = pods
        self.states: dict[str, ClusterModels] = {}  # every namespace's last valid ConfigMap
        self._texts: dict[str, str] = {}

    def namespace_of(self, model: str) -> str | None:
        """The namespace whose SpeechModel ``model`` is served (None: not served)."""
        return next((ns for ns in sorted(self.states) if ns in self.scope
                     and any(spec.name == model for spec, _ in self.states[ns].models)), None)

    def reset(self, items: list[dict[str, Any]], namespace: str | None = None) -> None:
        """A fresh list: of ``namespace``'s ConfigMaps, or (None) of every namespace's."""
        found = {}
        for item in items:
            meta = item.get("metadata") or {}
            if meta.get("name") == CONFIGMAP:
                found[meta.get("namespace") or namespace or ""] = str((item.get("data") or {}).get(KEY) or "")
        for gone in [ns for ns in self._texts if ns not in found and (namespace is None or ns == namespace)]:
            self._texts.pop(gone)
            self.states.pop(gone, None)
        for ns, text in found.items():
            self._read(ns, text)
        self.apply()

    def change(self, kind: str, obj: dict[str, Any], namespace: str | None = None) -> None:
        meta = obj.get("metadata") or {}
        if meta.get("name") != CONFIGMAP:
            return
        ns = meta.get("namespace") or namespace or ""
        if kind == "DELETED":
            self._texts.pop(ns, None)
            self.states.pop(ns, None)
        elif not self._read(ns, str((obj.get("data") or {}).get(KEY) or "")):
            return
        self.apply()

    def _read(self, namespace: str, text: str) -> bool:
        """Take ``namespace``'s ConfigMap text; False when it is the same, or not valid (the last valid stays)."""
        if self._texts.get(namespace) == text:
            return False
        self._texts[namespace] = text
        try:
            self.states[namespace] = parse_models(text)
        except (yaml.YAMLError, ValidationError) as exc:
            log.error("ignoring %s of namespace %s, which is not a valid models file: %s", CONFIGMAP, namespace, exc)
            return False
        return True

    def apply(self) -> None:
        """Make the table hold the models of the namespaces in scope (call it when the scope changes too)."""
        state, dropped = merge({ns: st for ns, st in self.states.items() if ns in self.scope})
        for what in dropped:
            log.warning("not serving %s: a model or route of that name is already served", what)
        apply(self.table, state, self.pods)
        log.info("models: %s", ", ".join(spec.name for spec, _ in state.models) or "none")

    def watches(self, client: httpx.AsyncClient, token_file: Path | None = None) -> list[ApiWatch]:
        """The ConfigMap watches: one per namespace named, or one of every namespace (a selector's scope).
        RBAC: ``get, list, watch`` on configmaps (``resourceNames: [harmony-router-models]`` is enough: the
        requests carry the field selector ``metadata.name``)."""
        if self.scope.cluster_wide:
            return [self._watch(None, client, token_file)]
        return [self._watch(ns, client, token_file) for ns in sorted(self.scope.names)]

    def _watch(self, namespace: str | None, client: httpx.AsyncClient, token_file: Path | None) -> ApiWatch:

        def items(objs: list[dict[str, Any]]) -> None:
            self.reset(objs, namespace)

        def change(kind: str, obj: dict[str, Any]) -> None:
            self.change(kind, obj, namespace)

        watch = ApiWatch(client, collection("/api/v1", "configmaps", namespace), items, change,
                         {"fieldSelector": f"metadata.name={CONFIGMAP}"}, token_file)
        watch.what = "ConfigMap"
        return watch
