"""The model services' batching metrics, gathered for the playground's Status charts.

In ``harmony serve`` the services listen on Unix sockets only the router reaches, so a browser cannot read
their ``/metrics``; the router reads each replica's once per poll and sums the series per model.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from services.router.routing import ModelTable
from services.router.service_metrics import read_metrics
from services.router.upstream.clients import ServiceClients

FIELDS = {"harmony_queue_depth": "queue_depth", "harmony_in_flight_requests": "in_flight",
          "harmony_batch_size_sum": "batch_items", "harmony_batch_size_count": "batches",
          "harmony_audio_seconds_total": "audio_seconds", "harmony_requests_total": "requests"}


class ModelFigures(BaseModel):
    """One model's figures, summed over its replicas; counters only grow, so the page charts their rates."""

    queue_depth: float = 0.0
    in_flight: float = 0.0
    batch_items: float = 0.0
    batches: float = 0.0
    audio_seconds: float = 0.0
    requests: float = 0.0
    replicas_reporting: int = 0


def add_exposition(text: str, figures: dict[str, ModelFigures]) -> None:
    """Add one replica's Prometheus exposition to ``figures`` (models it does not serve are ignored)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field = FIELDS.get(sample.name)
            model = sample.labels.get("model")
            if field is None or model not in figures:
                continue
            if field == "requests" and sample.labels.get("outcome") != "ok":
                continue
            setattr(figures[model], field, getattr(figures[model], field) + float(sample.value))


async def gather(table: ModelTable, clients: ServiceClients) -> dict[str, ModelFigures]:
    """Every model's figures, from one ``GET /metrics`` per service replica (shared by the models it serves)."""
    figures = {name: ModelFigures() for name in table.models}
    served: dict[str, list[str]] = {}
    for name, model in table.models.items():
        for replica in model.replicas:
            served.setdefault(replica.url, []).append(name)

    texts = await read_metrics(clients, list(served))
    for names, text in zip(served.values(), texts):
        if text is None:
            continue
        add_exposition(text, figures)
        for name in names:
            figures[name].replicas_reporting += 1
    return figures
