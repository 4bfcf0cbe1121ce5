"""Scale to zero and back (``autoscaling: {min_replicas: 0, engine: hpa}``): pure decisions on timestamps.

The router reports demand for a model on its demand Lease (coordination.k8s.io/v1, ``harmony-demand-<model>`` in
the model's namespace, label ``harmony.dev/demand``): ``spec.renewTime`` is when the model was last asked for. The
router renews it at once when it holds a request for a model with no ready replica (the wake-up call), every few
seconds while requests come, and every few seconds for as long as a request is held. The router never writes a
SpeechModel, and the operator stays the only writer of the Deployment. The operator keeps its own marks on the
Deployment it owns (``harmony.dev/scaled-to-zero-at``, ``harmony.dev/woken-at``, and, once a woken model has a
ready replica, ``harmony.dev/ready-at`` and ``harmony.dev/cold-start-seconds``) and decides:

- at zero replicas, a request newer than the scale-down: wake (one replica; the HPA takes it from there);
- at one or more, no request for ``scale_to_zero_after`` seconds since the latest of the last request, the last
  wake-up, the first ready replica after it and the SpeechModel's creation: zero; but never while a pod is
  starting (fewer ready replicas than wanted, and the rollout not failed): a slow cold start (a GPU node being
  added, a big image, a long load) is waited out instead of being killed and woken again in a loop.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from services.core.contracts.specs import AutoscalingSpec
from services.core.contracts.wire import DEMAND_LABEL, LAST_REQUEST_ANNOTATION, demand_lease_model, demand_lease_name

LAST_REQUEST = LAST_REQUEST_ANNOTATION       # formerly on the SpeechModel: no longer read (kept out of kopf's diff)
DEMAND = DEMAND_LABEL                        # the label of the router's demand Leases
lease_name = demand_lease_name
lease_model = demand_lease_model
SCALED_TO_ZERO_AT = "harmony.dev/scaled-to-zero-at"  # on the Deployment, written by the operator
WOKEN_AT = "harmony.dev/woken-at"             # on the Deployment, written by the operator
READY_AT = "harmony.dev/ready-at"             # on the Deployment: the first ready replica after a wake-up
COLD_START = "harmony.dev/cold-start-seconds"  # on the Deployment: woken-at -> ready-at, the last cold start


def parse_time(value: Any) -> float | None:
    """An RFC 3339 time (``2026-11-30T18:00:00Z``, fractions allowed) as epoch seconds; None if absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def format_time(epoch_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Times:
    last_request: float | None = None
    scaled_to_zero_at: float | None = None
    woken_at: float | None = None
    created: float | None = None
    ready_at: float | None = None

    @classmethod
    def of(cls, model: dict[str, Any], deployment: dict[str, Any], lease: dict[str, Any] | None = None) -> Times:
        """From the SpeechModel, its Deployment (the operator's marks) and its demand Lease (None: no demand yet)."""
        ours = (deployment.get("metadata") or {}).get("annotations") or {}
        meta = model.get("metadata") or {}
        return cls(parse_time(((lease or {}).get("spec") or {}).get("renewTime")),
                   parse_time(ours.get(SCALED_TO_ZERO_AT)), parse_time(ours.get(WOKEN_AT)),
                   parse_time(meta.get("creationTimestamp")), parse_time(ours.get(READY_AT)))

    @property
    def active_since(self) -> float | None:
        """The latest sign of use: a request, a wake-up, its first ready replica, or the model's creation."""
        known = [t for t in (self.last_request, self.woken_at, self.ready_at, self.created) if t is not None]
        return max(known) if known else None


def starting(deployment: dict[str, Any]) -> bool:
    """A pod of the Deployment is starting: fewer ready replicas than wanted, and the rollout has not failed
    (a pod that never gets Ready ends in ProgressDeadlineExceeded, and then the model may go to zero)."""
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = max(int(spec.get("replicas") or 0), int(status.get("replicas") or 0))
    if int(status.get("readyReplicas") or 0) >= wanted:
        return False
    progressing: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    return not (progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded")


def manages_zero(a: AutoscalingSpec | None) -> bool:
    """The operator moves the Deployment to and from zero (with KEDA, KEDA does)."""
    return a is not None and a.scales_to_zero and a.engine == "hpa"


def wants_zero(spec: Any) -> bool:
    """The same test on a raw spec (a dict as the API stores it), before any parsing: cheap, for filters."""
    autoscaling = (spec or {}).get("autoscaling") or {}
    return autoscaling.get("min_replicas") == 0 and autoscaling.get("engine", "hpa") == "hpa"


def decide(a: AutoscalingSpec, replicas: int, times: Times, now: float, pod_starting: bool = False) -> int | None:
    """The Deployment's new replica count (1: wake, 0: idle), or None to leave it (``pod_starting``: see
    :func:`starting`; such a model is never put to zero)."""
    if replicas == 0:
        woken = times.last_request is not None and (times.scaled_to_zero_at is None
                                                    or times.last_request > times.scaled_to_zero_at)
        return 1 if woken else None
    since = times.active_since
    if pod_starting:
        return None
    if since is not None and now - since >= a.scale_to_zero_after:
        return 0
    return None


def scale_patch(replicas: int, now: float) -> dict[str, Any]:
    """The merge patch of the Deployment: its replicas and the mark of why."""
    mark = SCALED_TO_ZERO_AT if replicas == 0 else WOKEN_AT
    return {"metadata": {"annotations": {mark: format_time(now)}}, "spec": {"replicas": replicas}}


def ready_patch(deployment: dict[str, Any], now: float) -> dict[str, Any] | None:
    """A woken Deployment's first ready replica: mark when, and how long the cold start took (None: nothing to mark,
    not woken, not ready yet, or marked already)."""
    ours = (deployment.get("metadata") or {}).get("annotations") or {}
    woken = parse_time(ours.get(WOKEN_AT))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    if woken is None or ready == 0 or (parse_time(ours.get(READY_AT)) or 0.0) >= woken:
        return None
    return {"metadata": {"annotations": {READY_AT: format_time(now), COLD_START: f"{max(0.0, now - woken):.1f}"}}}


def cold_start_s(deployment: dict[str, Any] | None) -> float | None:
    """The last measured cold start (wake-up to first ready replica) in seconds; None: never measured."""
    value = (((deployment or {}).get("metadata") or {}).get("annotations") or {}).get(COLD_START)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def first_seen_patch(now: float) -> dict[str, Any]:
    """Nothing tells when the model was last used: start its idle clock now."""
    return {"metadata": {"annotations": {WOKEN_AT: format_time(now)}}}


def idle_message(deployment: dict[str, Any]) -> str | None:
    """The status message of a Deployment the operator scaled to zero (None: it did not)."""
    at = ((deployment.get("metadata") or {}).get("annotations") or {}).get(SCALED_TO_ZERO_AT)
    return f"no requests: scaled to zero at {at}; the next request wakes it" if at else None
