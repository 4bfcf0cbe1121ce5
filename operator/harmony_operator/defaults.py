"""Defaults that work on a shared cluster (docs/kubernetes.md, "Defaults"): pure functions of a SpeechModel's spec.

- Requests: a model without ``resources.cpu``/``memory`` gets them from its backend (and, for Whisper, the size its
  source names), per batching instance (each holds its own copy of the model), so the scheduler places it where it
  fits and the autoscaler's figures mean something.
- Autoscaling: on in-flight requests per pod (the ``harmony_in_flight_requests`` gauge), whose default target is the
  pod's batch capacity, ``max_batch_size x instances``; CPU only where asked.
- A PodDisruptionBudget only where it can be kept: two replicas or more.
- Topology spread: the model's pods across zones and nodes, ScheduleAnyway (never blocks scheduling).
"""

from __future__ import annotations

import re
from typing import Any

from services.core.contracts.specs import SpeechModelSpec

# backend -> (CPU millicores, memory MiB) for one batching instance on CPU; the sizes measured here (docs/models.md)
# with room for a batch's buffers.
BACKENDS: dict[str, tuple[int, int]] = {
    "faster-whisper": (1000, 3072),
    "piper": (1000, 1024),
    "kokoro": (1000, 2048),
    "espeak": (250, 256),
    "silero": (500, 512),
    "resemblyzer": (500, 1024),
    "voicefilter-lite": (250, 512),
    "world": (1000, 1024),
}
UNKNOWN = (1000, 2048)
# Whisper's memory by the size its source names (CTranslate2 weights plus a batch of 30-s windows).
WHISPER_MIB = {"tiny": 1024, "base": 1536, "small": 3072, "medium": 6144, "large": 10240}
ACCELERATED_CPU = 1000  # millicores feeding an accelerator: decoding audio and batching, not inference


def _source_text(spec: SpeechModelSpec) -> str:
    s = spec.source
    return " ".join(str(x) for x in (s.package, s.path, s.url, s.oci, s.hf.repo if s.hf else None) if x).lower()


def _base(spec: SpeechModelSpec) -> tuple[int, int]:
    cpu, mib = BACKENDS.get(spec.backend, UNKNOWN)
    if spec.backend == "faster-whisper":
        sizes = [size for size in WHISPER_MIB if re.search(rf"(^|[^a-z]){size}([^a-z]|$)", _source_text(spec))]
        mib = WHISPER_MIB[sizes[-1]] if sizes else mib
    if spec.resources.has_accelerator:
        cpu = ACCELERATED_CPU
    return cpu, mib


def requests(spec: SpeechModelSpec) -> dict[str, str]:
    """The CPU and memory requests of the model container: the spec's, else derived (per batching instance)."""
    cpu, mib = _base(spec)
    instances = spec.batching.instances
    derived = {"cpu": f"{cpu * instances}m", "memory": f"{mib * instances}Mi"}
    given = {"cpu": spec.resources.cpu, "memory": spec.resources.memory}
    return {k: given[k] or derived[k] for k in ("cpu", "memory")}


def in_flight_target(spec: SpeechModelSpec) -> float:
    """The per-pod in-flight target when none is set: what the pod batches at once."""
    return float(spec.batching.max_batch_size * spec.batching.instances)


def min_replicas(spec: SpeechModelSpec) -> int:
    return spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas


def wants_pdb(spec: SpeechModelSpec) -> bool:
    """A budget of one pod out only helps (and never blocks a node drain forever) with two replicas or more."""
    return min_replicas(spec) >= 2


def topology_spread(selector: dict[str, Any]) -> list[dict[str, Any]]:
    """The model's pods spread across zones, then nodes; ScheduleAnyway, so a one-zone or one-node cluster still
    schedules them. ``pod-template-hash``: a rollout's new pods are spread among themselves."""
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]}
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")]
