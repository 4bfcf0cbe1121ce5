"""Keep the router's model table in sync with the operator's ConfigMap (mounted as a file).

The file (``harmony-router-models``, key ``models.yaml``) is a
:class:`services.core.contracts.wire.RouterModels`, written by the operator: every SpeechModel
with its spec and endpoint URL, and every ready SpeechRoute::

    models:
      - {name: whisper-base, endpoint: "http://harmony-whisper-base.ns.svc.cluster.local:8080", spec: {...}}
    routes:
      - {name: ..., spec: {...}}

The kubelet swaps a mounted ConfigMap in place when it changes; this polls the file
and applies what changed. A file that cannot be read or parsed leaves the table as it
was (and says so in the log), so a bad write never empties a running router. With an EndpointSlice
watch (``pods``, :mod:`services.router.cluster.pods`) a model's replicas are the ready pods of its Service
instead of the Service's one URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from services.core.contracts.specs import NamedModel, NamedRoute
from services.core.contracts.wire import RouterModels
from services.router.cluster.pods import PodDirectory
from services.router.routing import ModelTable

log = logging.getLogger("harmony.router.cluster")


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
