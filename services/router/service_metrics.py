"""``GET /metrics/services``: the model services' own metrics, as the router reads them, for a Prometheus that
cannot reach the services.

In ``harmony serve`` the services listen on Unix sockets only the router reaches, and Prometheus scrapes HTTP only;
so the router reads each replica's ``/metrics`` when it is scraped and answers them as one exposition, each sample
labelled with the replica it came from (``replica``: the service's name for a Unix socket, else its host:port). In
Kubernetes Prometheus scrapes the model pods themselves (the chart's ServiceMonitor); this endpoint is not needed
there.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients

PATH = "/metrics/services"


def replica_label(url: str) -> str:
    """``unix:/run/x/stt.sock`` -> ``stt``; ``http://10.0.0.7:8000`` -> ``10.0.0.7:8000``."""
    if url.startswith("unix:"):
        return os.path.basename(url[len("unix:"):]).removesuffix(".sock")
    return urlsplit(url).netloc or url


class Merged:
    """Families of several expositions merged by name, each sample with its replica's label (a collector)."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, text: str, replica: str) -> None:
        for family in text_string_to_metric_families(text):
            merged = self.families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            merged.samples.extend(Sample(s.name, {**s.labels, "replica": replica}, s.value, s.timestamp, s.exemplar)
                                  for s in family.samples)

    def collect(self) -> list[Metric]:
        return list(self.families.values())


async def read_metrics(clients: ServiceClients, urls: list[str]) -> list[str | None]:
    """Each replica's ``/metrics`` text, read at once (None where it did not answer 200 within 2 s)."""
    async def fetch(url: str) -> str | None:
        try:
            response = await clients.client(url).get("/metrics", timeout=2.0)
        except httpx.HTTPError:
            return None
        return response.text if response.status_code == 200 else None

    return list(await asyncio.gather(*(fetch(url) for url in urls)))


async def exposition(table: ModelTable, clients: ServiceClients) -> bytes:
    """Every replica's ``/metrics`` (each read once, though it serves several models), merged."""
    urls = sorted({replica.url for model in table.models.values() for replica in model.replicas})
    merged = Merged()
    for url, text in zip(urls, await read_metrics(clients, urls)):
        if text is not None:
            merged.add(text, replica_label(url))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(merged)
    return generate_latest(registry)


def routes(table: ModelTable, clients: ServiceClients) -> APIRouter:
    api = APIRouter()

    @api.get(PATH, include_in_schema=False)
    async def service_metrics() -> Response:
        return Response(await exposition(table, clients), media_type=CONTENT_TYPE_LATEST)

    return api
