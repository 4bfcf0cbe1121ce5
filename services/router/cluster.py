"""Keep the router's model table in sync with the operator's ConfigMap (mounted as a file).

The file (``harmony-router-models``, key ``models.yaml``) lists every SpeechModel
with its spec and endpoint URL, and every ready SpeechRoute::

    models:
      - {name: whisper-base, endpoint: "http://harmony-whisper-base.ns.svc.cluster.local:8080", spec: {...}}
    routes:
      - {name: ..., spec: {...}}

The kubelet swaps a mounted ConfigMap in place when it changes; this polls the file
and applies what changed. A file that cannot be read or parsed leaves the table as it
was (and says so in the log), so a bad write never empties a running router.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from services.core.specs import NamedModel, NamedRoute
from services.router.routing import ModelTable
from pydantic import ValidationError

log = logging.getLogger("harmony.router.cluster")


@dataclass(frozen=True)
class ClusterModels:
    models: list[tuple[NamedModel, str]]  # spec, endpoint URL
    routes: list[NamedRoute]


def parse_models(data: Any) -> ClusterModels:
    data = data or {}
    models = [(NamedModel.model_validate({**(m.get("spec") or {}), "name": m["name"]}), str(m["endpoint"]))
              for m in data.get("models") or []]
    routes = [NamedRoute.model_validate({**(r.get("spec") or {}), "name": r["name"]}) for r in data.get("routes") or []]
    return ClusterModels(models, routes)


def apply(table: ModelTable, state: ClusterModels) -> None:
    """Make ``table`` hold exactly ``state``; replicas of models that stay keep their counters."""
    wanted = {spec.name for spec, _ in state.models}
    for name in list(table.models):
        if name not in wanted:
            table.remove_model(name)
    for spec, url in state.models:
        table.set_model(spec, [url])
    routes = {route.name for route in state.routes}
    for name in list(table.routes):
        if name not in routes:
            table.routes.pop(name, None)
    for route in state.routes:
        table.set_route(route)


class ClusterSync:
    """Reload ``path`` into ``table`` whenever its content changes."""

    def __init__(self, table: ModelTable, path: str | Path, interval_s: float = 2.0) -> None:
        self.table = table
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
            state = parse_models(yaml.safe_load(text))
        except (yaml.YAMLError, ValidationError, KeyError, TypeError, AttributeError) as exc:
            log.error("ignoring %s, which is not a valid models file: %s", self.path, exc)
            self._digest = digest
            return False
        apply(self.table, state)
        self._digest = digest
        log.info("models from %s: %s", self.path, ", ".join(s.name for s, _ in state.models) or "none")
        return True

    async def run(self) -> None:
        while True:
            self.reload()
            await asyncio.sleep(self.interval_s)
