"""Each model's replicas are its ready pods: the operator's ConfigMap names the models and their Services, the
EndpointSlice watch (:mod:`services.router.cluster.slice_watch`) tells which pods of each Service are ready.

Balancing per pod, not per Service: kube-proxy balances connections, and the router's pooled keep-alive
connections would pin a model's traffic to the pods it first reached, so new pods would get little of it.

The rules, per model (its ConfigMap entry's endpoint is ``http://<service>.<namespace>.svc...:<port>``):

- until the watch has listed the namespace's slices once (or with no watch, or for an endpoint that is not
  a Service of this namespace), the model's replicas are what the ConfigMap says: its Service's URL;
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
    service: str | None  # the Service of this namespace that fronts the model's pods (None: not one)
    port: int
    scales_to_zero: bool


def service_of(endpoint: str, namespace: str) -> tuple[str | None, int]:
    """The Service named by a model's endpoint URL when it is one of ``namespace``, and the URL's port."""
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError):
        return None, 0
    port = url.port or 80
    labels = url.host.split(".")
    if len(labels) >= 3 and labels[2] == "svc" and labels[1] == namespace:
        return labels[0], port
    if len(labels) == 2 and labels[1] == namespace:  # <service>.<namespace>
        return labels[0], port
    return None, port


class PodDirectory:
    def __init__(self, table: ModelTable, namespace: str) -> None:
        self.table = table
        self.namespace = namespace
        self.book = SliceBook()
        self.synced = False  # the watch has listed the slices at least once
        self._models: dict[str, ModelService] = {}
        self._fallback: dict[str, list[str]] = {}

    # the ConfigMap's side (services.router.cluster.config_map.apply)
    def follow(self, models: Iterable[tuple[NamedModel, str]]) -> None:
        """The models of the ConfigMap, each with its Service's endpoint URL."""
        self._models = {}
        for spec, endpoint in models:
            service, port = service_of(endpoint, self.namespace)
            scales = bool(spec.autoscaling and spec.autoscaling.scales_to_zero)
            self._models[spec.name] = ModelService(service, port, scales)
        self._fallback = {name: urls for name, urls in self._fallback.items() if name in self._models}

    def replicas(self, name: str, fallback: list[str]) -> list[str]:
        """Model ``name``'s replicas; ``fallback``: what the ConfigMap alone says."""
        self._fallback[name] = fallback
        model = self._models.get(name)
        if not self.synced or model is None or model.service is None:
            return fallback
        pods = self.book.ready_urls(model.service, PORT_NAME, model.port)
        if pods or model.scales_to_zero:
            return pods
        return fallback

    # the watch's side (services.router.cluster.slice_watch)
    def reset(self, slices: Iterable[EndpointSlice]) -> None:
        changed = self.book.reset(slices)
        first = not self.synced
        self.synced = True
        self._refresh(None if first else changed)

    def event(self, event: SliceEvent) -> None:
        self._refresh(self.book.apply(event))

    def _refresh(self, services: set[str] | None) -> None:
        """Set the replicas of the models of ``services`` (None: of every model) in the table."""
        for name, model in self._models.items():
            if services is None or model.service in services:
                self.table.set_replicas(name, self.replicas(name, self._fallback.get(name, [])))
