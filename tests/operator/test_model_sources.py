"""Model sources against kmock (issue 20): a real kopf run.

A SpeechModel with an hf source and a credentials Secret gets a Deployment whose pods pull the weights first (the
init container ``pull``, the Secret as its environment) and serve offline. The operator watches the model pods
(a server-side label selector) and turns their pull init containers into the SpeechModel's status: Downloading
while one runs, ``status.weights`` (the pinned revision, the bytes) from a finished one's termination message, and
PullFailed from one that keeps failing.
"""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp

from harmony_operator.names import child_name
from services.core.contracts.wire import WeightsProgress
from tests.operator.harness import NAMESPACE, eventually, requests, running_operator, stored, watching
from tests.operator.test_operator import DEPLOYMENTS, MODELS, condition, create, patch

NAME = "whisper-small"
CHILD = child_name(NAME)
PODS = "v1/pods"
COMMIT = "5f1c8e0a9b7d6c4e3f2a1b0c9d8e7f6a5b4c3d2e"
HF_MODEL = {
    "apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel",
    "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": "uid-small", "resourceVersion": "1"},
    "spec": {"task": "stt", "backend": "faster-whisper", "compute_type": "int8",
             "source": {"hf": {"repo": "Systran/faster-whisper-small", "revision": "main"},
                        "credentials_secret": "hf-token"}},
}
DONE = WeightsProgress(phase="ready", source="hf://Systran/faster-whisper-small@main", revision=COMMIT,
                       bytesDone=483_546_902, bytesTotal=483_546_902, filesDone=4, filesTotal=4,
                       path=f"/var/cache/harmony/models/hf/Systran--faster-whisper-small/{COMMIT}")


def pod_of(deployment: dict[str, Any], name: str, pull: dict[str, Any]) -> dict[str, Any]:
    """A pod as the ReplicaSet would make it from the Deployment's template, with the kubelet's report of its
    init container ``pull``."""
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "resourceVersion": "1",
                         "labels": dict(template["metadata"]["labels"]),
                         "annotations": dict(template["metadata"]["annotations"])},
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "initContainerStatuses": [{"name": "pull", "restartCount": 0, **pull}]}}


async def create_pod(api: aiohttp.ClientSession, pod: dict[str, Any]) -> None:
    async with api.post(f"/api/v1/namespaces/{NAMESPACE}/pods", json=pod) as response:
        assert response.status < 300, await response.text()


async def hf_model_deployed(cluster: Any, api: aiohttp.ClientSession) -> dict[str, Any]:
    """The hf model created once kopf watches the pods; its Deployment, once it has a first status."""
    await eventually(lambda: watching(cluster, "pods"), 30, "kopf to watch the model pods")
    await create(api, "speechmodels", HF_MODEL)
    deployment = await eventually(lambda: stored(cluster, DEPLOYMENTS, CHILD), what="Deployment")
    await eventually(lambda: condition(stored(cluster, MODELS, NAME), "Ready"), what="first status")
    return deployment


def model_status(cluster: Any) -> dict[str, Any]:
    return (stored(cluster, MODELS, NAME) or {}).get("status") or {}


async def test_an_hf_model_pulls_first_and_its_status_shows_the_pull(cluster: Any, api: aiohttp.ClientSession) -> None:
    async with running_operator(cluster):
        deployment = await hf_model_deployed(cluster, api)

        # The kubelet starts the pull: the model is Downloading.
        await create_pod(api, pod_of(deployment, f"{CHILD}-7d9f-a", {
            "state": {"running": {"startedAt": "2026-12-07T04:00:00Z"}}}))
        await eventually(lambda: condition(stored(cluster, MODELS, NAME), "Ready").get("reason") == "Downloading",
                         what="Ready False Downloading")
        downloading = model_status(cluster)
        assert condition({"status": downloading}, "Progressing")["reason"] == "Downloading"
        assert downloading["weights"]["phase"] == "downloading"
        assert downloading["weights"]["source"] == "hf://Systran/faster-whisper-small@main"

        # The pull finishes: its termination message pins the revision in status.weights.
        await patch(api, f"/api/v1/namespaces/{NAMESPACE}/pods/{CHILD}-7d9f-a/status", {"status": {
            "initContainerStatuses": [{"name": "pull", "restartCount": 0, "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "message": DONE.model_dump_json(),
                "finishedAt": "2026-12-07T04:03:00Z"}}}]}})
        await eventually(lambda: model_status(cluster).get("weights", {}).get("revision") == COMMIT,
                         what="status.weights.revision")

    deployment = stored(cluster, DEPLOYMENTS, CHILD)
    pod = deployment["spec"]["template"]["spec"]
    [pull], [model] = pod["initContainers"], pod["containers"]
    assert pull["name"] == "pull" and pull["command"] == ["harmony", "pull"]
    assert pull["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert pull["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "envFrom" not in model
    assert {"name": "HARMONY_OFFLINE", "value": "1"} in model["env"]
    weights = model_status(cluster)["weights"]
    assert WeightsProgress.model_validate(weights) == DONE
    assert condition(stored(cluster, MODELS, NAME), "Ready")["reason"] == "NoReadyReplicas"  # loading, not pulling
    # Only the model pods are watched: the selector goes to the API server.
    pod_watches = [r for r in requests(cluster, "GET", "/pods") if r.params.get("watch") == "true"]
    assert pod_watches and all(
        set(r.params.get("labelSelector", "").split(",")) ==
        {"app.kubernetes.io/name=harmony-model", "app.kubernetes.io/managed-by=harmony-operator"}
        for r in pod_watches)


async def test_a_pull_that_keeps_failing_degrades_the_model(cluster: Any, api: aiohttp.ClientSession) -> None:
    failure = WeightsProgress(phase="failed", source="hf://Systran/faster-whisper-small@main",
                              message="401 Unauthorized: Systran/faster-whisper-small: is HF_TOKEN set?")
    async with running_operator(cluster):
        deployment = await hf_model_deployed(cluster, api)
        await create_pod(api, pod_of(deployment, f"{CHILD}-7d9f-b", {
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}, "restartCount": 2,
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": failure.model_dump_json(),
                                         "finishedAt": "2026-12-07T04:01:00Z"}}}))
        await eventually(lambda: condition(stored(cluster, MODELS, NAME), "Degraded").get("reason") == "PullFailed",
                         what="Degraded PullFailed")

    degraded = condition(stored(cluster, MODELS, NAME), "Degraded")
    assert degraded["status"] == "True"
    assert f"pod {CHILD}-7d9f-b" in degraded["message"] and "is HF_TOKEN set?" in degraded["message"]
    assert condition(stored(cluster, MODELS, NAME), "Ready")["reason"] == "PullFailed"
    assert model_status(cluster)["weights"]["phase"] == "failed"


def progress_line(bytes_done: int, revision: str | None = COMMIT) -> bytes:
    """A line ``harmony pull --json`` prints while it fetches (the model's name, then WeightsProgress)."""
    progress = WeightsProgress(phase="downloading", source="hf://Systran/faster-whisper-small@main",
                               revision=revision, bytesDone=bytes_done, bytesTotal=DONE.bytesTotal, filesDone=1,
                               filesTotal=4, message="model.bin")
    return (json.dumps({"model": NAME, **progress.model_dump()}) + "\n").encode()


async def test_the_bytes_of_a_running_pull_follow_its_log(cluster: Any, api: aiohttp.ClientSession,
                                                          monkeypatch: Any) -> None:
    # A running init container makes no pod event: the operator's periodic pull-progress pass reads the log.
    monkeypatch.setenv("HARMONY_PULL_PROGRESS_INTERVAL_S", "0.3")
    pod_name = f"{CHILD}-7d9f-c"
    log_path = f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}/log"
    log = [b""]  # what the pull has printed so far: its last line is served
    cluster[f"get {log_path}"] << (lambda: log[-1])

    def weights() -> dict[str, Any]:
        return model_status(cluster).get("weights") or {}

    async with running_operator(cluster):
        deployment = await hf_model_deployed(cluster, api)
        await create_pod(api, pod_of(deployment, pod_name, {"state": {"running": {
            "startedAt": "2026-12-07T04:00:00Z"}}}))
        # Nothing printed yet: Downloading, no bytes.
        await eventually(lambda: condition(stored(cluster, MODELS, NAME), "Ready").get("reason") == "Downloading",
                         what="Ready False Downloading")
        await eventually(lambda: requests(cluster, "GET", log_path), what="the pull's log read")
        assert weights().get("bytesDone", 0) == 0

        log.append(progress_line(100_000_000))
        await eventually(lambda: weights().get("bytesDone") == 100_000_000, what="status.weights.bytesDone 100 MB")
        assert weights()["bytesTotal"] == DONE.bytesTotal and weights()["revision"] == COMMIT
        assert "100.0 MB of 483.5 MB, 1/4 files" in condition(stored(cluster, MODELS, NAME), "Ready")["message"]
        log.append(b"some stray line on stderr\n")  # hides nothing: the last progress line still counts
        log.append(progress_line(400_000_000) + b"UserWarning: something\n")
        await eventually(lambda: weights().get("bytesDone") == 400_000_000, what="status.weights.bytesDone 400 MB")
        assert "400.0 MB of 483.5 MB" in condition(stored(cluster, MODELS, NAME), "Progressing")["message"]
        reads = requests(cluster, "GET", log_path)
        assert all(r.params.get("container") == "pull" and r.params.get("tailLines") == "5" for r in reads)

        # It finishes: the termination message pins status.weights, and the log is no longer read.
        await patch(api, f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}/status", {"status": {
            "initContainerStatuses": [{"name": "pull", "restartCount": 0, "state": {"terminated": {
                "exitCode": 0, "reason": "Completed", "message": DONE.model_dump_json(),
                "finishedAt": "2026-12-07T04:03:00Z"}}}]}})
        await eventually(lambda: weights().get("phase") == "ready", what="status.weights ready")
        await asyncio.sleep(0.7)  # a pass that listed the pods just before the change may still read once
        settled = len(requests(cluster, "GET", log_path))
        await asyncio.sleep(1.0)  # three more passes
        assert len(requests(cluster, "GET", log_path)) == settled

    assert WeightsProgress.model_validate(weights()) == DONE
    assert condition(stored(cluster, MODELS, NAME), "Ready")["reason"] == "NoReadyReplicas"


async def test_a_log_that_cannot_be_read_leaves_the_pull_running_without_bytes(
        cluster: Any, api: aiohttp.ClientSession, monkeypatch: Any) -> None:
    # No reaction for pods/log: kmock answers 404, as an API server would refuse a Role without pods/log (403).
    monkeypatch.setenv("HARMONY_PULL_PROGRESS_INTERVAL_S", "0.3")
    pod_name = f"{CHILD}-7d9f-d"
    async with running_operator(cluster):
        deployment = await hf_model_deployed(cluster, api)
        await create_pod(api, pod_of(deployment, pod_name, {"state": {"running": {
            "startedAt": "2026-12-07T04:00:00Z"}}}))
        await eventually(lambda: len(requests(cluster, "GET", f"/pods/{pod_name}/log")) >= 3,
                         what="the periodic pass to try the log")
    ready = condition(stored(cluster, MODELS, NAME), "Ready")
    assert ready["reason"] == "Downloading" and f"pod {pod_name}: fetching since" in ready["message"]
    assert model_status(cluster)["weights"]["phase"] == "downloading"
    assert model_status(cluster)["weights"]["bytesDone"] == 0
