"""Pure builders of a SpeechModel's autoscaler: the HPA's metrics and behavior, or a KEDA ScaledObject.

Both scale on load: ``harmony_in_flight_requests`` per pod (requests a model service has
admitted and not yet answered) when ``target_in_flight`` is set, ``harmony_queue_depth`` with
``target_queue_depth``, CPU utilization with ``target_cpu_utilization``; none set: in-flight requests at the
pod's batch capacity (:mod:`harmony_operator.defaults`). The HPA reads Pods metrics through a
custom-metrics adapter (the chart ships prometheus-adapter's rule); KEDA queries Prometheus.

Scale to zero (``min_replicas: 0``): an HPA cannot go below one replica without a feature gate,
so with ``engine: hpa`` the operator itself moves the Deployment between zero and one
(:mod:`harmony_operator.idle`) and the HPA scales from one up (it leaves a Deployment at zero
alone). With ``engine: keda``, KEDA does both: ``minReplicaCount: 0``, a ``cooldownPeriod`` of
``scale_to_zero_after``, and activation on the requests the router holds for the model.
"""

from __future__ import annotations

from typing import Any

from services.core.contracts.specs import AutoscalingSpec

from . import names

IN_FLIGHT = "harmony_in_flight_requests"
QUEUE_DEPTH = "harmony_queue_depth"
HELD = "harmony_router_held_requests"  # the router's: requests waiting for a model with no ready replica
KEDA_API_VERSION = "keda.sh/v1alpha1"
KEDA_POLLING_S = 15


def quantity(value: float) -> str:
    """4 -> '4', 2.5 -> '2500m' (a Kubernetes quantity)."""
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def _pods_metric(name: str, target: float) -> dict[str, Any]:
    return {"type": "Pods", "pods": {"metric": {"name": name},
                                     "target": {"type": "AverageValue", "averageValue": quantity(target)}}}


def hpa_metrics(a: AutoscalingSpec, default_in_flight: float) -> list[dict[str, Any]]:
    """In-flight requests and/or queue depth per pod when set, CPU beside them when set; none of the three: in-flight
    requests at ``default_in_flight`` (the pod's batch capacity), never CPU of a pod that may request little."""
    metrics = []
    if a.target_in_flight is not None:
        metrics.append(_pods_metric(IN_FLIGHT, a.target_in_flight))
    if a.target_queue_depth is not None:
        metrics.append(_pods_metric(QUEUE_DEPTH, a.target_queue_depth))
    if not metrics and a.target_cpu_utilization is None:
        metrics.append(_pods_metric(IN_FLIGHT, default_in_flight))
    if a.target_cpu_utilization is not None:
        metrics.append({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization}}})
    return metrics


def behavior(a: AutoscalingSpec) -> dict[str, Any]:
    """Up fast (double, or four pods, a minute), down slowly (one pod a minute after the stabilization window):
    a model pod takes minutes to load, and a pod scaled down drains its long requests first."""
    return {
        "scaleUp": {"stabilizationWindowSeconds": a.scale_up_stabilization_s, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60},
                                 {"type": "Percent", "value": 100, "periodSeconds": 60}]},
        "scaleDown": {"stabilizationWindowSeconds": a.scale_down_stabilization_s, "selectPolicy": "Min",
                      "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]},
    }


def load_query(model: str, namespace: str) -> str:
    """PromQL: the model's requests in flight in its pods plus those the router holds for it (0 when none)."""
    match = f'namespace="{namespace}",model="{model}"'
    return f"(sum({IN_FLIGHT}{{{match}}}) or vector(0)) + (sum({HELD}{{{match}}}) or vector(0))"


def scaled_object(name: str, namespace: str, a: AutoscalingSpec, labels: dict[str, str],
                  prometheus_url: str, default_in_flight: float = 1.0) -> dict[str, Any]:
    """A KEDA ScaledObject (keda.sh/v1alpha1) on the model's Deployment: one Prometheus trigger on the load per
    pod (``threshold`` is the per-pod target: KEDA divides the query by the replicas), active at any load."""
    target = a.target_in_flight if a.target_in_flight is not None else default_in_flight
    return {
        "apiVersion": KEDA_API_VERSION, "kind": "ScaledObject",
        "metadata": {"name": names.child_name(name), "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.child_name(name)},
            "minReplicaCount": a.min_replicas,
            "maxReplicaCount": max(a.max_replicas, 1),
            "pollingInterval": KEDA_POLLING_S,
            "cooldownPeriod": a.scale_to_zero_after,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(a)}},
            "triggers": [{
                "type": "prometheus", "name": "in-flight", "metricType": "AverageValue",
                "metadata": {"serverAddress": prometheus_url, "query": load_query(name, namespace),
                             "threshold": f"{target:g}", "activationThreshold": "0"},
            }],
        },
    }
