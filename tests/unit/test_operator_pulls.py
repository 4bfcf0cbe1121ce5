"""Pure: the model pods' pull init containers -> the SpeechModel's Downloading / PullFailed conditions and
status.weights (operator/harmony_operator/pulls.py, status.py)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from services.core.crd import openapi_to_jsonschema, speech_model_crd
from services.core.specs import ModelSource, SpeechModelSpec
from services.core.wire import SpeechModelStatus, WeightsProgress
from services.weights import fetch
from harmony_operator import manifests, names, pulls, status

AT = "2026-12-07T04:00:00Z"
SOURCE = ModelSource.model_validate({"hf": {"repo": "Systran/faster-whisper-small"}, "credentials_secret": "hf"})
HASH = "0123456789abcdef"
COMMIT = "d3b0c9e5a1f4b2c6e8a7d9f0b1c2d3e4f5a6b7c8"
READY = WeightsProgress(phase="ready", source="hf://Systran/faster-whisper-small@main", revision=COMMIT,
                        bytesDone=483_000_000, bytesTotal=483_000_000, filesDone=4, filesTotal=4,
                        path="/var/cache/harmony/models/hf/Systran--faster-whisper-small/" + COMMIT)


def pod(name: str, pull: dict[str, Any] | None, spec_hash: str = HASH, deleting: bool = False,
        with_pull: bool = True) -> dict[str, Any]:
    """A model pod as the API lists it; ``pull``: the init container's status (None: not reported yet)."""
    meta: dict[str, Any] = {"name": name, "labels": {names.MODEL_LABEL: "m"},
                            "annotations": {names.SPEC_HASH: spec_hash}}
    if deleting:
        meta["deletionTimestamp"] = AT
    body: dict[str, Any] = {"metadata": meta, "spec": {"initContainers": [{"name": "pull"}] if with_pull else [],
                                                       "containers": [{"name": "model"}]},
                            "status": {"phase": "Pending"}}
    if pull is not None:
        body["status"]["initContainerStatuses"] = [{"name": "pull", "restartCount": 0, **pull}]
    return body


def running(started: str = "2026-12-07T03:59:00Z") -> dict[str, Any]:
    return {"state": {"running": {"startedAt": started}}}


def done(message: str = READY.model_dump_json(), finished: str = "2026-12-07T04:01:00Z") -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": message,
                                     "finishedAt": finished}}}


def failed(message: str, code: int = 1) -> dict[str, Any]:
    return {"state": {"terminated": {"exitCode": code, "reason": "Error", "message": message,
                                     "finishedAt": "2026-12-07T04:02:00Z"}}}


FAILURE = WeightsProgress(phase="failed", source="hf://Systran/faster-whisper-small@main",
                          message="401 Unauthorized: Systran/faster-whisper-small needs HF_TOKEN").model_dump_json()


def deployment(ready: int = 0, replicas: int = 1) -> dict[str, Any]:
    return {"metadata": {}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": replicas}}


def conditions(result: SpeechModelStatus) -> dict[str, tuple[str, str, str]]:
    return {c.type: (c.status, c.reason, c.message) for c in result.conditions}


def model_status(pods: list[dict[str, Any]], ready: int = 0, previous: Any = None) -> SpeechModelStatus:
    pull = pulls.pull_state(pods, SOURCE, HASH)
    return status.model_status("m", "speech", deployment(ready), previous, AT, pull=pull)


def test_source_labels() -> None:
    assert pulls.source_label(SOURCE) == "hf://Systran/faster-whisper-small@main"
    url = ModelSource.model_validate({"url": "https://user:pw@example.com/piper/voice.tar.gz?X-Amz-Signature=abc"})
    assert pulls.source_label(url) == "https://example.com/piper/voice.tar.gz"  # no credentials, no query
    assert pulls.source_label(ModelSource(oci="ghcr.io/acme/w:1")) == "oci://ghcr.io/acme/w:1"
    picked = ModelSource.model_validate({"hf": {"repo": "rhasspy/piper-voices", "files": ["en/en_US/joe/*"]}})
    assert pulls.source_label(picked) == fetch.Tracker(picked, None).state.source  # what harmony pull reports


def test_termination_messages_are_parsed() -> None:
    assert pulls.parse_message(READY.model_dump_json()) == READY
    # FallbackToLogsOnError: the log's tail, progress lines of --json then a traceback.
    lines = [WeightsProgress(phase="downloading", bytesDone=n).model_dump_json() for n in (1, 2)]
    tail = "\n".join([*lines, "Traceback (most recent call last):", '  File "x.py", line 1', "OSError: disk full"])
    assert pulls.parse_message(tail).bytesDone == 2
    assert pulls.parse_message(json.dumps(READY.model_dump(), indent=2)) == READY  # written across lines
    assert pulls.parse_message("Killed") is None and pulls.parse_message("") is None and \
        pulls.parse_message(None) is None
    assert pulls.parse_message('{"phase": "teleporting"}') is None


def test_a_running_pull_is_downloading() -> None:
    result = model_status([pod("m-1", running())])
    state = conditions(result)
    assert state["Ready"][:2] == ("False", "Downloading")
    assert state["Progressing"][:2] == ("True", "Downloading")
    assert state["Degraded"][:2] == ("False", "AsExpected")
    assert "hf://Systran/faster-whisper-small@main" in state["Ready"][2] and "pod m-1" in state["Ready"][2]
    assert result.weights == WeightsProgress(phase="downloading", source="hf://Systran/faster-whisper-small@main",
                                             message="pod m-1: fetching since 2026-12-07T03:59:00Z")


@pytest.mark.parametrize("pull", [None, {"state": {"waiting": {"reason": "PodInitializing"}}}],
                         ids=["not-reported", "waiting"])
def test_a_pull_that_has_not_started_is_downloading_too(pull: dict[str, Any] | None) -> None:
    assert conditions(model_status([pod("m-1", pull)]))["Ready"][:2] == ("False", "Downloading")


def test_a_finished_pull_pins_the_revision_in_status_weights() -> None:
    result = model_status([pod("m-1", done())], ready=1)
    assert result.weights == READY and result.weights.revision == COMMIT
    state = conditions(result)
    assert state["Ready"][:2] == ("True", "MinimumReplicasReady")
    assert state["Progressing"][:2] == ("False", "RolloutComplete")
    # Loading the model after the pull is no longer downloading.
    assert conditions(model_status([pod("m-1", done())], ready=0))["Ready"][:2] == ("False", "NoReadyReplicas")


def test_the_latest_finished_pull_is_shown() -> None:
    older = READY.model_copy(update={"revision": "a" * 40})
    pods = [pod("m-2", done(finished="2026-12-07T04:05:00Z")),
            pod("m-1", done(older.model_dump_json(), finished="2026-12-07T04:01:00Z"))]
    assert model_status(pods, ready=2).weights.revision == COMMIT


def test_a_failed_pull_is_degraded_with_its_message() -> None:
    result = model_status([pod("m-1", failed(FAILURE))])
    state = conditions(result)
    assert state["Degraded"][:2] == ("True", "PullFailed")
    assert state["Ready"][:2] == ("False", "PullFailed")
    assert "pod m-1" in state["Degraded"][2] and "401 Unauthorized" in state["Degraded"][2]
    assert result.weights.phase == "failed" and "needs HF_TOKEN" in result.weights.message


def test_a_crash_looping_pull_is_failed_with_its_last_output() -> None:
    crash = {"state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
             "lastState": failed("Traceback (most recent call last):\nOSError: [Errno 28] No space left on device")
             ["state"], "restartCount": 3}
    result = model_status([pod("m-1", crash)])
    degraded = conditions(result)["Degraded"]
    assert degraded[:2] == ("True", "PullFailed")
    assert "CrashLoopBackOff, 3 restarts" in degraded[2] and "No space left on device" in degraded[2]
    assert result.weights.phase == "failed" and result.weights.source == "hf://Systran/faster-whisper-small@main"


def test_a_missing_credentials_secret_is_a_failed_pull() -> None:
    waiting = {"state": {"waiting": {"reason": "CreateContainerConfigError",
                                     "message": 'secret "hf-token" not found'}}}
    degraded = conditions(model_status([pod("m-1", waiting)]))["Degraded"]
    assert degraded[:2] == ("True", "PullFailed") and 'secret "hf-token" not found' in degraded[2]


def test_a_retry_after_a_failure_is_downloading_and_says_why_it_retries() -> None:
    retry = {**running(), "lastState": failed(FAILURE)["state"], "restartCount": 1}
    ready = conditions(model_status([pod("m-1", retry)]))["Ready"]
    assert ready[:2] == ("False", "Downloading") and "try 2; the last one failed: 401 Unauthorized" in ready[2]


def test_a_failure_anywhere_wins_and_a_ready_replica_stays_ready() -> None:
    pods = [pod("m-1", done()), pod("m-2", failed(FAILURE)), pod("m-3", failed("Killed", 137)), pod("m-4", running())]
    result = model_status(pods, ready=1)
    state = conditions(result)
    assert state["Ready"][:2] == ("True", "MinimumReplicasReady")
    assert state["Degraded"][:2] == ("True", "PullFailed")
    assert "pod m-2" in state["Degraded"][2] and "(and 1 more pods)" in state["Degraded"][2]
    # A failed pull whose output is no progress keeps what it said.
    only_killed = model_status([pod("m-3", failed("Killed", 137))])
    assert "Killed" in conditions(only_killed)["Degraded"][2] and only_killed.weights.message == "Killed"


def test_a_new_pod_downloading_beside_a_ready_one_is_progressing() -> None:
    result = model_status([pod("m-1", done()), pod("m-2", running())], ready=1)
    state = conditions(result)
    assert state["Ready"][:2] == ("True", "MinimumReplicasReady")
    assert state["Progressing"][:2] == ("True", "Downloading")
    assert result.weights == READY  # the revision is already pinned


def test_pods_of_another_model_file_or_going_away_or_without_a_pull_are_ignored() -> None:
    pods = [pod("old", failed(FAILURE), spec_hash="fedcba9876543210"), pod("gone", running(), deleting=True),
            pod("plain", None, with_pull=False)]
    assert pulls.pull_state(pods, SOURCE, HASH) == pulls.PullState("none", "hf://Systran/faster-whisper-small@main")
    assert pulls.pull_state(pods[:1], SOURCE, None).phase == "failed"  # no hash given: every pod counts


def test_without_pods_the_previous_weights_of_the_same_source_stay() -> None:
    previous = {"conditions": [], "weights": READY.model_dump(mode="json", exclude_none=True)}
    kept = status.model_status("m", "speech", deployment(0, replicas=0), previous, AT,
                               pull=pulls.pull_state([], SOURCE, HASH))
    assert kept.weights == READY  # scaled to zero: the revision is still the one pinned
    other = ModelSource.model_validate({"hf": {"repo": "Systran/faster-whisper-medium"}})
    assert status.model_status("m", "speech", deployment(), previous, AT,
                               pull=pulls.pull_state([], other, HASH)).weights is None
    # A source that is not pulled (package, path, oci) has no weights to show.
    assert status.model_status("m", "speech", deployment(), previous, AT).weights is None


def test_the_status_with_weights_fits_the_crd() -> None:
    schema = speech_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(openapi_to_jsonschema(schema))
    for pods in ([pod("m-1", running())], [pod("m-1", done())], [pod("m-1", failed(FAILURE))]):
        body = {"apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel", "metadata": {"name": "m"},
                "spec": {"task": "stt", "backend": "faster-whisper", "source": SOURCE.model_dump(exclude_none=True)},
                "status": status.dump(model_status(pods))}
        validator.validate(body)
        assert "weights" in body["status"]


def test_the_spec_hash_the_pods_carry_is_the_one_compared() -> None:
    spec = SpeechModelSpec.model_validate({"task": "stt", "backend": "faster-whisper",
                                           "source": SOURCE.model_dump(exclude_none=True)})
    template = manifests.deployment("m", "speech", spec, manifests.OperatorSettings())["spec"]["template"]
    live = {"metadata": {**template["metadata"], "name": "m-1"}, "spec": template["spec"],
            "status": {"initContainerStatuses": [{"name": "pull", **running()}]}}
    assert pulls.pull_state([live], spec.source, manifests.config_hash("m", spec)).phase == "downloading"
