"""Scale to zero and back (``autoscaling: {min_replicas: 0, engine: hpa}``): pure decisions on timestamps.

The router reports when a model was last asked for: it writes the SpeechModel's annotation
``harmony.dev/last-request`` (an RFC 3339 time) at once when it holds a request for a model with
no ready replica (the wake-up call), and every few seconds while requests come. That needs
only ``patch`` on SpeechModels in its own namespace, and the operator stays the only writer of
the Deployment. The operator keeps its own marks on the Deployment it owns
(``harmony.dev/scaled-to-zero-at``, ``harmony.dev/woken-at``) and decides:

- at zero replicas, a request newer than the scale-down: wake (one replica; the HPA takes it from there);
- at one or more, no request for ``scale_to_zero_after`` seconds since the later of the last request,
  the last wake-up and the SpeechModel's creation: zero.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from services.core.contracts.specs import AutoscalingSpec
from services.core.contracts.wire import LAST_REQUEST_ANNOTATION

LAST_REQUEST = LAST_REQUEST_ANNOTATION       # on the SpeechModel, written by the router
SCALED_TO_ZERO_AT = "harmony.dev/scaled-to-zero-at"  # on the Deployment, written by the operator
WOKEN_AT = "harmony.dev/woken-at"             # on the Deployment, written by the operator


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

    @classmethod
    def of(cls, model: dict[str, Any], deployment: dict[str, Any]) -> Times:
        ours = (deployment.get("metadata") or {}).get("annotations") or {}
        meta = model.get("metadata") or {}
        return cls(parse_time((meta.get("annotations") or {}).get(LAST_REQUEST)),
                   parse_time(ours.get(SCALED_TO_ZERO_AT)), parse_time(ours.get(WOKEN_AT)),
                   parse_time(meta.get("creationTimestamp")))

    @property
    def active_since(self) -> float | None:
        """The latest sign of use: a request, a wake-up, or the model's creation (None: nothing known)."""
        known = [t for t in (self.last_request, self.woken_at, self.created) if t is not None]
        return max(known) if known else None


def manages_zero(a: AutoscalingSpec | None) -> bool:
    """The operator moves the Deployment to and from zero (with KEDA, KEDA does)."""
    return a is not None and a.scales_to_zero and a.engine == "hpa"


def wants_zero(spec: Any) -> bool:
    """The same test on a raw spec (a dict as the API stores it), before any parsing: cheap, for filters."""
    autoscaling = (spec or {}).get("autoscaling") or {}
    return autoscaling.get("min_replicas") == 0 and autoscaling.get("engine", "hpa") == "hpa"


def decide(a: AutoscalingSpec, replicas: int, times: Times, now: float) -> int | None:
    """The Deployment's new replica count (1: wake, 0: idle), or None to leave it."""
    if replicas == 0:
        woken = times.last_request is not None and (times.scaled_to_zero_at is None
                                                    or times.last_request > times.scaled_to_zero_at)
        return 1 if woken else None
    since = times.active_since
    if since is not None and now - since >= a.scale_to_zero_after:
        return 0
    return None


def scale_patch(replicas: int, now: float) -> dict[str, Any]:
    """The merge patch of the Deployment: its replicas and the mark of why."""
    mark = SCALED_TO_ZERO_AT if replicas == 0 else WOKEN_AT
    return {"metadata": {"annotations": {mark: format_time(now)}}, "spec": {"replicas": replicas}}


def first_seen_patch(now: float) -> dict[str, Any]:
    """Nothing tells when the model was last used: start its idle clock now."""
    return {"metadata": {"annotations": {WOKEN_AT: format_time(now)}}}


def idle_message(deployment: dict[str, Any]) -> str | None:
    """The status message of a Deployment the operator scaled to zero (None: it did not)."""
    at = ((deployment.get("metadata") or {}).get("annotations") or {}).get(SCALED_TO_ZERO_AT)
    return f"no requests: scaled to zero at {at}; the next request wakes it" if at else None
