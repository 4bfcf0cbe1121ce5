"""Pure: the model pods' pull init containers -> the SpeechModel's Downloading / PullFailed conditions and
status.weights (operator/harmony_operator/pulls.py, status.py)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from harmony_operator import manifests, names, pulls, status
from services.core.contracts.crd import openapi_to_jsonschema, speech_model_crd
from services.core.contracts.specs import ModelSource, SpeechModelSpec
from services.core.contracts.wire import SpeechModelStatus, WeightsProgress
from services.weights import fetch

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


# While a pull runs, its bytes are in its log (harmony pull --json: one object a line, with the model's name).
def log_line(bytes_done: int, bytes_total: int | None = 1_500_000_000, revision: str | None = COMMIT,
             phase: str = "downloading", files: tuple[int, int | None] = (1, 4)) -> str:
    progress = WeightsProgress(phase=phase, source="hf://Systran/faster-whisper-small@main", revision=revision,
                               bytesDone=bytes_done, bytesTotal=bytes_total, filesDone=files[0],
                               filesTotal=files[1], message="model.bin")
    return json.dumps({"model": "whisper-small", **progress.model_dump()})


def test_a_json_line_of_harmony_pull_is_parsed_without_its_model_key() -> None:
    progress = pulls.parse_message(log_line(412_300_000))
    assert progress is not None and progress.bytesDone == 412_300_000 and progress.revision == COMMIT
    # FallbackToLogsOnError keeps such lines too: the last one counts.
    tail = "\n".join([log_line(1), log_line(2), "Traceback (most recent call last):", "OSError: disk full"])
    assert pulls.parse_message(tail).bytesDone == 2
    assert pulls.parse_message('["model", 1]') is None and pulls.parse_message('{"model": "m", "bytesDone": -1}') \
        is None


def test_sizes_for_people() -> None:
    assert [pulls.human(n) for n in (0, 999, 1000, 412_300_000, 1_500_000_000, 3 * 10**15)] == \
        ["0 B", "999 B", "1.0 KB", "412.3 MB", "1.5 GB", "3000.0 TB"]


def test_the_log_of_a_running_pull_gives_its_bytes() -> None:
    pods = [pod("m-1", running())]
    assert pulls.pull_state(pods, SOURCE, HASH).tail_pod == "m-1"  # the log to read
    pull = pulls.pull_state(pods, SOURCE, HASH, {"m-1": log_line(412_300_000)})
    result = status.model_status("m", "speech", deployment(), None, AT, pull=pull)
    assert result.weights == WeightsProgress(phase="downloading", source="hf://Systran/faster-whisper-small@main",
                                             revision=COMMIT, bytesDone=412_300_000, bytesTotal=1_500_000_000,
                                             filesDone=1, filesTotal=4, message="model.bin")
    state = conditions(result)
    assert state["Ready"][:2] == ("False", "Downloading") and state["Progressing"][:2] == ("True", "Downloading")
    for _, _, message in (state["Ready"], state["Progressing"]):
        assert message == ("fetching the weights of hf://Systran/faster-whisper-small@main: pod m-1: "
                           "412.3 MB of 1.5 GB, 1/4 files, since 2026-12-07T03:59:00Z")
    # The next pass, further on: the status follows (and is a change to write).
    later = status.model_status("m", "speech", deployment(), result, AT, pull=pulls.pull_state(
        pods, SOURCE, HASH, {"m-1": "\n".join([log_line(1_200_000_000, files=(3, 4)), "UserWarning: x"])}))
    assert later.weights.bytesDone == 1_200_000_000 and "1.2 GB of 1.5 GB, 3/4 files" in \
        conditions(later)["Ready"][2]
    assert not status.same(result, later)
    # The status with live bytes fits the CRD.
    schema = speech_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(openapi_to_jsonschema(schema)).validate({
        "apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel", "metadata": {"name": "m"},
        "spec": {"task": "stt", "backend": "faster-whisper", "source": SOURCE.model_dump(exclude_none=True)},
        "status": status.dump(later)})


def test_before_the_revision_or_the_size_is_known() -> None:
    resolving = pulls.pull_state([pod("m-1", running())], SOURCE, HASH,
                                 {"m-1": log_line(0, None, None, phase="resolving", files=(0, None))})
    assert resolving.weights.phase == "resolving" and resolving.weights.revision is None
    assert "pod m-1: resolving the revision, since" in resolving.message
    unsized = pulls.pull_state([pod("m-1", running())], SOURCE, HASH, {"m-1": log_line(5_000_000, None, None,
                                                                                       files=(0, None))})
    assert "pod m-1: 5.0 MB, since" in unsized.message and unsized.weights.bytesTotal is None
    # A line without a source (an older harmony pull) names the model's.
    bare = json.dumps({"model": "m", "phase": "downloading", "bytesDone": 7})
    assert pulls.pull_state([pod("m-1", running())], SOURCE, HASH, {"m-1": bare}).weights.source == \
        "hf://Systran/faster-whisper-small@main"


@pytest.mark.parametrize("line", ["", "   ", "Downloading model.bin:  12%|#2  | 58.0M/483M", "{not json",
                                  '{"model": "m", "phase": "teleporting"}', "null", "[1, 2]",
                                  log_line(1_500_000_000, phase="ready")],
                         ids=["empty", "blank", "tqdm", "broken-json", "bad-phase", "null", "list", "final-line"])
def test_a_log_without_progress_leaves_the_running_state_without_bytes(line: str) -> None:
    without = pulls.pull_state([pod("m-1", running())], SOURCE, HASH)
    assert pulls.pull_state([pod("m-1", running())], SOURCE, HASH, {"m-1": line}) == without
    assert without.weights == WeightsProgress(phase="downloading", source="hf://Systran/faster-whisper-small@main",
                                              message="pod m-1: fetching since 2026-12-07T03:59:00Z")


def test_only_a_running_pull_has_a_log_to_read() -> None:
    waiting = {"state": {"waiting": {"reason": "PodInitializing"}}}
    assert pulls.pull_state([pod("m-1", waiting)], SOURCE, HASH).tail_pod == ""
    assert pulls.pull_state([pod("m-1", done())], SOURCE, HASH).tail_pod == ""
    # A failure anywhere is what the status tells: no log is read.
    assert pulls.pull_state([pod("m-1", failed(FAILURE)), pod("m-2", running())], SOURCE, HASH).tail_pod == ""
    # Of several running pulls, the one the message names (the first by name); a waiting one is not read.
    pods = [pod("m-3", running()), pod("m-2", running()), pod("m-1", waiting)]
    assert pulls.pull_state(pods, SOURCE, HASH).tail_pod == "m-2"
    # A log given for a pod that is not running changes nothing.
    assert pulls.pull_state([pod("m-1", waiting)], SOURCE, HASH, {"m-1": log_line(5)}) == \
        pulls.pull_state([pod("m-1", waiting)], SOURCE, HASH)


def test_a_finished_pull_keeps_status_weights_while_another_pod_fetches() -> None:
    pods = [pod("m-1", done()), pod("m-2", running())]
    pull = pulls.pull_state(pods, SOURCE, HASH, {"m-2": log_line(100_000_000)})
    result = status.model_status("m", "speech", deployment(ready=1), None, AT, pull=pull)
    assert result.weights == READY  # what the ready replica serves, revision pinned
    assert "pod m-2: 100.0 MB of 1.5 GB" in conditions(result)["Progressing"][2]


def test_a_retry_shows_its_bytes_and_why_it_retries() -> None:
    retry = {**running(), "lastState": failed(FAILURE)["state"], "restartCount": 1}
    pull = pulls.pull_state([pod("m-1", retry)], SOURCE, HASH, {"m-1": log_line(10_000_000)})
    assert "pod m-1: 10.0 MB of 1.5 GB, 1/4 files, since 2026-12-07T03:59:00Z (try 2; the last one failed: " \
           "401 Unauthorized" in pull.message


class PodsAndLogs:
    """The two reads reconcile.pull_state makes: the model's pods, and one pull log (or its failure)."""

    def __init__(self, pods: list[dict[str, Any]], log: str | Exception) -> None:
        self.pods, self.log, self.reads = pods, log, []

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        assert kind == "Pod"
        return self.pods

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int) -> str:
        self.reads.append((namespace, name, container, tail_lines))
        if isinstance(self.log, Exception):
            raise self.log
        return self.log


def test_the_operator_reads_one_pull_log_per_pass_and_ignores_a_failed_read() -> None:
    from harmony_operator import reconcile
    from harmony_operator.kube import KubeError

    spec = SpeechModelSpec.model_validate({"task": "stt", "backend": "faster-whisper",
                                           "source": SOURCE.model_dump(exclude_none=True)})
    template = manifests.deployment("m", "speech", spec, manifests.OperatorSettings())["spec"]["template"]

    def live(name: str, pull: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {**template["metadata"], "name": name}, "spec": template["spec"],
                "status": {"initContainerStatuses": [{"name": "pull", **pull}]}}

    pods = [live("m-a", running()), live("m-b", running())]
    kube = PodsAndLogs(pods, log_line(412_300_000))
    state = reconcile.pull_state(reconcile.Context(kube, manifests.OperatorSettings()), "m", "speech", spec)
    assert kube.reads == [("speech", "m-a", "pull", reconcile.PULL_LOG_LINES)]
    assert state.weights.bytesDone == 412_300_000 and "412.3 MB of 1.5 GB" in state.message
    for error in (KubeError(403, 'pods "m-a" is forbidden: cannot get resource "pods/log"'), TimeoutError("read")):
        kube = PodsAndLogs(pods, error)
        state = reconcile.pull_state(reconcile.Context(kube, manifests.OperatorSettings()), "m", "speech", spec)
        assert len(kube.reads) == 1 and state.phase == "downloading" and state.weights.bytesDone == 0
    # Nothing running (done, or not started): no log is read.
    kube = PodsAndLogs([live("m-a", done())], log_line(1))
    assert reconcile.pull_state(reconcile.Context(kube, manifests.OperatorSettings()), "m", "speech",
                                spec).phase == "ready" and kube.reads == []


def test_what_harmony_pull_json_prints_is_what_the_operator_reads(capsys: pytest.CaptureFixture[str]) -> None:
    from services.commands.pull import JsonLines

    fetching = WeightsProgress(phase="downloading", source="hf://Systran/faster-whisper-small@main",
                               revision=COMMIT, bytesDone=5_000_000, bytesTotal=483_000_000, filesTotal=4)
    with JsonLines() as out:
        out.progress("whisper-small", fetching)
    printed = capsys.readouterr().out
    assert '"model": "whisper-small"' in printed and pulls.parse_message(printed) == fetching
    pull = pulls.pull_state([pod("m-1", running())], SOURCE, HASH, {"m-1": printed})
    assert pull.weights == fetching and "5.0 MB of 483.0 MB, 0/4 files" in pull.message
