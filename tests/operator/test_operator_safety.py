"""The operator does no harm, against kmock: foreign objects untouched, honest status, edits repaired at once.

The periodic pass runs every 300 s in these tests (conftest), so whatever happens here happened on an event.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import kmock as km

from harmony_operator.names import child_name
from tests.operator.harness import NAMESPACE, eventually, quiet, requests, running_operator, stored
from tests.operator.test_operator import (
    BASE,
    CONFIGMAPS,
    DEPLOYMENTS,
    MODELS,
    PDBS,
    SERVICES,
    condition,
    create,
    model,
    patch,
    router_models,
)

CORE = f"/api/v1/namespaces/{NAMESPACE}"
APPS = f"/apis/apps/v1/namespaces/{NAMESPACE}"


def chart_service(name: str) -> dict[str, Any]:
    """A Service the Helm chart made: not the operator's."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": "uid-chart", "resourceVersion": "1",
                         "labels": {"app.kubernetes.io/managed-by": "Helm",
                                    "app.kubernetes.io/name": "harmony-router"}},
            "spec": {"selector": {"app.kubernetes.io/name": "harmony-router"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


async def test_name_conflict_leaves_the_foreign_object_untouched(cluster: Any, api: aiohttp.ClientSession) -> None:
    taken = child_name("whisper-small")
    async with running_operator(cluster):
        async with api.post(f"{CORE}/services", json=chart_service(taken)) as response:
            assert response.status < 300
        before = stored(cluster, SERVICES, taken)
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await create(api, "speechmodels", model("router", "uid-router"))  # its children would be harmony-router
        await eventually(lambda: condition(stored(cluster, MODELS, "whisper-small"), "NameConflict"),
                         what="NameConflict on whisper-small")
        await eventually(lambda: condition(stored(cluster, MODELS, "router"), "NameConflict"),
                         what="NameConflict on router")
        await eventually(lambda: router_models(cluster).get("models") == [], what="router config without them")

        conflict = condition(stored(cluster, MODELS, "whisper-small"), "NameConflict")
        assert (conflict["status"], conflict["reason"]) == ("True", "ObjectNotOwned")
        assert f"Service {NAMESPACE}/{taken} (managed by Helm)" in conflict["message"]
        for kind in ("Degraded", "Ready"):
            assert condition(stored(cluster, MODELS, "whisper-small"), kind)["reason"] == "NameConflict"
        assert condition(stored(cluster, MODELS, "router"), "NameConflict")["reason"] == "ReservedName"

        # Deleting the model that collided deletes nothing of the chart's.
        async with api.delete(f"{BASE}/speechmodels/whisper-small") as response:
            assert response.status < 300
        await eventually(lambda: stored(cluster, MODELS, "whisper-small") is None, what="model gone")

    assert stored(cluster, SERVICES, taken) == before
    assert not requests(cluster, "PATCH", f"/services/{taken}")
    assert not requests(cluster, "DELETE", f"/services/{taken}")
    # Nothing at all was applied for either model: no half-built set of children.
    for resource in (DEPLOYMENTS, CONFIGMAPS, PDBS):
        assert stored(cluster, resource, taken) is None
    assert not requests(cluster, "POST", "/deployments")
    assert not any("harmony-router" in str(r.url) for r in requests(cluster, "PATCH", "/services"))


def _deployment_status(**fields: Any) -> dict[str, Any]:
    return {"status": {"replicas": 1, "readyReplicas": 0, "updatedReplicas": 1, "availableReplicas": 0, **fields}}


async def test_status_follows_the_rollout_honestly(cluster: Any, api: aiohttp.ClientSession) -> None:
    child = child_name("whisper-small")
    failing: list[bool] = []

    # A criterion, not a reaction that declines: kmock disables a reaction after its first mismatch.
    cluster[km.method.PATCH, km.resource("apps", "v1", "deployments"),
            lambda request: bool(failing) and request.params.get("fieldManager") == "harmony-operator"] \
        << km.KubernetesError(status=500, reason="InternalError", message="etcdserver: leader changed")

    def reasons() -> dict[str, tuple[str, str]]:
        status = stored(cluster, MODELS, "whisper-small")
        return {kind: (condition(status, kind).get("status"), condition(status, kind).get("reason"))
                for kind in ("Ready", "Progressing", "Degraded")}

    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child), what="deployment")

        # Pods loading weights, Available False: a normal rollout, not Degraded.
        await patch(api, f"{APPS}/deployments/{child}", _deployment_status(conditions=[
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]))
        await eventually(lambda: reasons()["Progressing"] == ("True", "RollingOut"), what="rolling out")
        assert reasons()["Degraded"] == ("False", "AsExpected")

        # A quota refuses the pods: ReplicaFailure, with the Deployment's reason and message.
        await patch(api, f"{APPS}/deployments/{child}", _deployment_status(conditions=[
            {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
             "message": 'pods "x" is forbidden: exceeded quota: gpu'}]))
        await eventually(lambda: reasons()["Degraded"] == ("True", "ReplicaFailure"), what="ReplicaFailure")
        assert "FailedCreate: pods" in condition(stored(cluster, MODELS, "whisper-small"), "Degraded")["message"]

        # A generation the Deployment controller has not seen: not complete yet, however ready the pods.
        await patch(api, f"{APPS}/deployments/{child}", {"metadata": {"generation": 3}, **_deployment_status(
            readyReplicas=1, availableReplicas=1, observedGeneration=2, conditions=[])})
        await eventually(lambda: reasons()["Progressing"] == ("True", "RolloutPending"), what="RolloutPending")

        # An apply fails: ApplyFailed, which a Deployment event does not clear...
        await quiet(cluster, 0.5)  # the creation fully handled (kmock may deliver it more than once)
        failing.append(True)
        await patch(api, f"{BASE}/speechmodels/whisper-small", {"spec": {"replicas": 2}})
        await eventually(lambda: reasons()["Degraded"] == ("True", "ApplyFailed"), what="ApplyFailed")
        await patch(api, f"{APPS}/deployments/{child}", _deployment_status(
            replicas=2, readyReplicas=2, updatedReplicas=2, observedGeneration=3))
        await eventually(lambda: stored(cluster, MODELS, "whisper-small")["status"]["readyReplicas"] == 2,
                         what="status refreshed from the Deployment")
        assert reasons()["Degraded"] == ("True", "ApplyFailed")
        # ...only the next successful apply does.
        failing.clear()
        await eventually(lambda: reasons()["Degraded"] == ("False", "AsExpected"), what="ApplyFailed cleared")


async def test_edited_children_are_repaired_at_their_next_event(cluster: Any, api: aiohttp.ClientSession) -> None:
    child = child_name("whisper-small")
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-small", "uid-small"))
        await eventually(lambda: stored(cluster, SERVICES, child), what="service")
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child), what="deployment")
        selector = stored(cluster, SERVICES, child)["spec"]["selector"]
        image = stored(cluster, DEPLOYMENTS, child)["spec"]["template"]["spec"]["containers"][0]["image"]

        await patch(api, f"{CORE}/services/{child}", {"spec": {"selector": {"app": "someone-else"}}})
        await patch(api, f"{APPS}/deployments/{child}", {"spec": {"template": {"spec": {"containers": [
            {"name": "model", "image": "example.com/other:1"}]}}}})

        await eventually(lambda: stored(cluster, SERVICES, child)["spec"]["selector"] == selector,
                         what="service selector repaired")
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child)["spec"]["template"]["spec"]["containers"][0]
                         .get("image") == image, what="deployment image repaired")
