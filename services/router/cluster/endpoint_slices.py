"""EndpointSlices, and the ready pod addresses of each Service they describe (pure: no API calls).

The Kubernetes API's ``discovery.k8s.io/v1`` EndpointSlice, read as far as the router needs it: the Service
it belongs to (label ``kubernetes.io/service-name``), its endpoints' addresses and conditions, its ports. A
Service may have several slices. An endpoint counts when its ``ready`` condition is true or unknown (the API's
rule); a terminating pod is not ready, so it leaves as soon as its deletion starts. :class:`SliceBook` keeps
the slices of a namespace from the watch's events and answers each Service's ready pod URLs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class EndpointConditions(_Lenient):
    ready: bool | None = None  # None: unknown, which consumers treat as ready
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(_Lenient):
    addresses: list[str] = Field(default_factory=list)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)


class EndpointPort(_Lenient):
    name: str | None = None
    port: int | None = None
    protocol: str | None = "TCP"


class SliceMetadata(_Lenient):
    name: str
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = Field(None, alias="resourceVersion")


class EndpointSlice(_Lenient):
    metadata: SliceMetadata
    address_type: str = Field("IPv4", alias="addressType")
    endpoints: list[Endpoint] | None = None
    ports: list[EndpointPort] | None = None

    @property
    def service(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)

    def port(self, name: str, default: int) -> int:
        """The port named ``name`` (the only one, when there is one), else ``default``."""
        ports = [p for p in self.ports or [] if p.port and (p.protocol or "TCP") == "TCP"]
        named = next((p.port for p in ports if p.name == name), None)
        if named is not None:
            return named
        return ports[0].port if len(ports) == 1 and ports[0].port else default

    def ready_urls(self, port_name: str, default_port: int) -> list[str]:
        if self.address_type not in ("IPv4", "IPv6"):
            return []  # FQDN endpoints (mirrored from a selectorless Service): not pods we can reach by IP
        port = self.port(port_name, default_port)
        urls = []
        for endpoint in self.endpoints or []:
            if endpoint.conditions.ready is False:
                continue
            for address in endpoint.addresses[:1]:  # the API's consumers use the first address
                host = f"[{address}]" if ":" in address else address
                urls.append(f"http://{host}:{port}")
        return urls


class SliceEvent(BaseModel):
    """One event of a watch (``BOOKMARK`` and ``ERROR`` are the watch's own business, never passed on)."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: EndpointSlice


class SliceBook:
    """The EndpointSlices of one namespace, as the watch reports them."""

    def __init__(self) -> None:
        self._slices: dict[str, EndpointSlice] = {}  # by slice name

    def reset(self, slices: Iterable[EndpointSlice]) -> set[str]:
        """Replace every slice (a fresh list); the Services whose slices may have changed."""
        before = {s.service for s in self._slices.values()}
        self._slices = {s.metadata.name: s for s in slices}
        return {name for name in before | {s.service for s in self._slices.values()} if name}

    def apply(self, event: SliceEvent) -> set[str]:
        """Apply one watch event; the Services it changed."""
        name = event.object.metadata.name
        old = self._slices.pop(name, None)
        if event.type != "DELETED":
            self._slices[name] = event.object
        return {s for s in (old.service if old else None, event.object.service) if s}

    def ready_urls(self, service: str, port_name: str, default_port: int) -> list[str]:
        """The URLs of the ready pods of ``service`` (sorted, each once)."""
        urls = {url for s in self._slices.values() if s.service == service
                for url in s.ready_urls(port_name, default_port)}
        return sorted(urls)
