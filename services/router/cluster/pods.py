"""Each model's replicas are its ready pods: the operator's ConfigMap names the models and their Services, the
EndpointSlice watch (:mod:`services.router.cluster.slice_watch`) tells which pods of each Service are ready.

Balancing per pod, not per Service: kube-proxy balances connections, and the router's pooled keep-alive
connections would pin a model's traffic to the pods it first reached, so new pods would get little of it.

The rules, per model (its ConfigMap entry's endpoint is ``http://<service>.<namespace>.svc...:<port>``):

- until the watch has listed the slices of the model's namespace once (or with no watch, or for an endpoint that
  names no Service), the model's replicas are what the ConfigMap says: its Service's URL;
- then, its ready pods (``http://<pod IP>:<port>``, the slice's port named ``http``);
- with no ready pod: for a model that scales to zero, none (its requests are held until one is ready,
  :mod:`services.router.upstream.hold`, and go on the moment the watch sees it); for any other model, the Service's
  URL, so its requests fail at once (503) as they would without the watch, rather than wait.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from services.core.contracts.specs import NamedModel
from services.router.cluster.endpoint_slices import EndpointSlice, SliceBook, SliceEvent
from services.router.routing import ModelTable

PORT_NAME = "http"  # the model pods' container port (operator: names.SERVICE_PORT, named http)


@dataclass(frozen=True)
class ModelService:
    service: str | None  # the Service that fronts the model's pods (None: not one we can name)
    port: int
    scales_to_zero: bool
    namespace: str = ""  # the Service's namespace


def locate(endpoint: str, default_namespace: str) -> tuple[str, str | None, int]:
    """The namespace and Service named by a model's endpoint URL (``<service>.<namespace>.svc...``,
    ``<service>.<namespace>``, or a bare ``<service>`` of ``default_namespace``), and the URL's port."""
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError):
        return default_namespace, None, 0
    port = url.port or 80
    labels = url.host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        return labels[1], labels[0], port
    if len(labels) == 2:  # <service>.<namespace>
        return labels[1], labels[0], port
    if len(labels) == 1 and labels[0]:
        return default_namespace, labels[0], port
    return default_namespace, None, port


def service_of(endpoint: str, namespace: str) -> tuple[str | None, int]:
    """The Service named by a model's endpoint URL when it is one of ``namespace``, and the URL's port."""
    found, service, port = locate(endpoint, "")
    return (service if found == namespace else None), port


class PodDirectory:
    """Each model's ready pods, from the EndpointSlices of the namespaces watched (one book per namespace)."""

    def __init__(self, table: ModelTable, namespace: str) -> None:
        self.table = table
        self.namespace = namespace  # the router's own: a bare Service name in an endpoint URL is of this one
        self.books: dict[str, SliceBook] = {}
        self._listed: set[str] = set()  # namespaces whose slices were listed at least once
        self._all_listed = False  # a watch of every namespace has listed once
        self._models: dict[str, ModelService] = {}
        self._fallback: dict[str, list[str]] = {}

    @property
    def synced(self) -> bool:
        return self._all_listed or bool(self._listed)

    @property
    def book(self) -> SliceBook:
        """The router's own namespace's slices."""
        return self.books.setdefault(self.namespace, SliceBook())

    # the ConfigMap's side (services.router.cluster.config_map.apply)
    def follow(self, models: Iterable[tuple[NamedModel, str]]) -> None:
        """The models of the ConfigMaps, each with its Service's endpoint URL."""
        self._models = {}
        for spec, endpoint in models:
            namespace, service, port = locate(endpoint, self.namespace)
            scales = bool(spec.autoscaling and spec.autoscaling.scales_to_zero)
            self._models[spec.name] = ModelService(service, port, scales, namespace)
        self._fallback = {name: urls for name, urls in self._fallback.items() if name in self._models}

    def replicas(self, name: str, fallback: list[str]) -> list[str]:
        """Model ``name``'s replicas; ``fallback``: what the ConfigMap alone says."""
        self._fallback[name] = fallback
        model = self._models.get(name)
        if model is None or model.service is None or not (self._all_listed or model.namespace in self._listed):
            return fallback
        pods = self.books.get(model.namespace, SliceBook()).ready_urls(model.service, PORT_NAME, model.port)
        if pods or model.scales_to_zero:
            return pods
        return fallback

    # the watch's side (services.router.cluster.slice_watch)
    def reset(self, slices: Iterable[EndpointSlice], namespace: str | None = None) -> None:
        """A fresh list: of ``namespace``'s slices, or (None) of every namespace's."""
        groups: dict[str, list[EndpointSlice]] = {}
        for item in slices:
            groups.setdefault(item.metadata.namespace or namespace or self.namespace, []).append(item)
        targets = {namespace} if namespace else set(groups) | set(self.books)
        first = not (self._all_listed or (namespace in self._listed if namespace else False))
        changed = {(ns, service) for ns in targets
                   for service in self.books.setdefault(ns, SliceBook()).reset(groups.get(ns, []))}
        if namespace:
            self._listed.add(namespace)
        else:
            self._all_listed = True
        self._refresh(None if first else changed)

    def event(self, event: SliceEvent) -> None:
        namespace = event.object.metadata.namespace or self.namespace
        changed = self.books.setdefault(namespace, SliceBook()).apply(event)
        self._refresh({(namespace, service) for service in changed})

    def _refresh(self, services: set[tuple[str, str]] | None) -> None:
        """Set the replicas of the models of ``services`` (None: of every model) in the table."""
        for name, model in self._models.items():
            if services is None or (model.namespace, model.service) in services:
                self.table.set_replicas(name, self.replicas(name, self._fallback.get(name, [])))
