"""The operator's pure parts that keep it harmless: status transitions, ownership, drift, aliases, names."""

from __future__ import annotations

from typing import Any

from harmony_operator import aliases, drift, manifests, names, ownership, status
from harmony_operator.kube import merge_patch
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import NamedModel

AT = "2026-01-01T00:00:00Z"


def deployment(replicas: int = 1, ready: int = 0, updated: int = 1, conditions: list[dict[str, Any]] | None = None,
               generation: int | None = None, observed: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {}, "spec": {"replicas": replicas},
                            "status": {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated,
                                       "conditions": conditions or []}}
    if generation is not None:
        body["metadata"]["generation"] = generation
    if observed is not None:
        body["status"]["observedGeneration"] = observed
    return body


def states(result: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


def test_a_rollout_in_progress_is_not_degraded() -> None:
    loading = deployment(conditions=[{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
                                     {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}])
    assert states(status.model_status("m", "s", loading, None, AT)) == {
        "Ready": ("False", "NoReadyReplicas"), "Progressing": ("True", "RollingOut"),
        "Degraded": ("False", "AsExpected")}


def test_an_unobserved_generation_is_not_a_complete_rollout() -> None:
    fresh = deployment(ready=1, generation=4, observed=3)
    assert states(status.model_status("m", "s", fresh, None, AT))["Progressing"] == ("True", "RolloutPending")
    assert states(status.model_status("m", "s", deployment(ready=1, generation=4, observed=4), None, AT))[
        "Progressing"] == ("False", "RolloutComplete")
    # A stalled condition of the old generation does not count either.
    stale = deployment(generation=4, observed=3, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    assert states(status.model_status("m", "s", stale, None, AT))["Degraded"] == ("False", "AsExpected")


def test_replica_failure_is_surfaced_with_its_reason() -> None:
    quota = deployment(updated=0, conditions=[{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                               "message": "exceeded quota: gpu"}])
    result = status.model_status("m", "s", quota, None, AT)
    degraded = next(c for c in result.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "ReplicaFailure")
    assert degraded.message == "FailedCreate: exceeded quota: gpu"


def test_stalled_rollout_is_degraded_and_not_progressing() -> None:
    stalled = deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                      "message": "timed out"}])
    result = states(status.model_status("m", "s", stalled, None, AT))
    assert result["Degraded"] == ("True", "ProgressDeadlineExceeded")
    assert result["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_apply_failed_is_cleared_only_by_a_successful_apply() -> None:
    failed = status.model_status("m", "s", deployment(), None, AT, problem=status.Problem("ApplyFailed", "HTTP 500"))
    # A Deployment event (no apply ran): the problem stays, the counts follow the Deployment.
    event = status.model_status("m", "s", deployment(ready=1), status.dump(failed), AT, applied=False)
    assert states(event)["Degraded"] == ("True", "ApplyFailed") and event.readyReplicas == 1
    assert states(event)["Ready"] == ("True", "MinimumReplicasReady")
    applied = status.model_status("m", "s", deployment(ready=1), event, AT)
    assert states(applied)["Degraded"] == ("False", "AsExpected")


def test_name_conflict_condition_names_the_object() -> None:
    conflict = status.Problem("NameConflict", "Service s/harmony-router (managed by Helm) already exists")
    result = status.model_status("router", "s", None, None, AT, problem=conflict)
    assert states(result) == {"Ready": ("False", "NameConflict"), "Progressing": ("False", "NameConflict"),
                              "Degraded": ("True", "NameConflict"), "NameConflict": ("True", "ObjectNotOwned")}
    assert "harmony-router" in next(c for c in result.conditions if c.type == "NameConflict").message
    kept = status.model_status("router", "s", None, status.dump(result), AT, applied=False)
    assert states(kept)["NameConflict"] == ("True", "ObjectNotOwned")
    assert "NameConflict" not in states(status.model_status("router", "s", None, kept, AT))


def test_alias_conflict_is_set_carried_and_cleared() -> None:
    first = status.model_status("a", "s", deployment(ready=1), None, AT)
    flagged = status.with_alias_conflict(status.dump(first), "'whisper-1' is also claimed", AT)
    assert flagged is not None and states(flagged)["AliasConflict"] == ("True", "DuplicateAlias")
    # An apply (which does not look at other models) keeps it; the namespace sync clears it.
    carried = status.model_status("a", "s", deployment(ready=1), status.dump(flagged), AT)
    assert "AliasConflict" in states(carried)
    assert "AliasConflict" not in states(status.with_alias_conflict(carried, None, AT))
    assert status.with_alias_conflict(None, "x", AT) is None


def test_route_status_says_which_step_is_not_ready() -> None:
    result = status.route_status([], None, AT, unready=["stt (SpeechModel whisper-small: NoReadyReplicas)"])
    assert states(result) == {"Ready": ("False", "StepNotReady")}
    assert result.unreadySteps == ["stt (SpeechModel whisper-small: NoReadyReplicas)"]
    mismatch = status.route_status([], None, AT, problem=status.Problem("TaskMismatch", "step 'vc' ..."))
    assert states(mismatch) == {"Ready": ("False", "TaskMismatch")}


def test_progress_deadline_outlasts_the_startup_probe() -> None:
    spec = NamedModel.model_validate({"name": "m", "task": "stt", "backend": "b", "source": {"package": "p"}})
    body = manifests.deployment("m", "s", spec, OperatorSettings())
    probe = body["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    startup_s = probe.get("initialDelaySeconds", 0) + probe["periodSeconds"] * probe["failureThreshold"]
    assert body["spec"]["progressDeadlineSeconds"] > startup_s


# --- ownership ---------------------------------------------------------------------------------

def child(refs: list[dict[str, Any]] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": "harmony-m", "namespace": "s", "labels": labels or {},
                                            "ownerReferences": refs or []}}


def test_ownership() -> None:
    ref = {"apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel", "name": "m", "uid": "u1"}
    ours = names.labels("m")
    assert ownership.owned_by(child([ref]), "u1", "m")
    assert ownership.owned_by(child([], ours), "u1", "m")  # orphaned by --cascade=orphan: ours again
    assert ownership.owned_by(child([{**ref, "uid": "old"}], ours), "u1", "m")  # an earlier model of that name
    assert not ownership.owned_by(child([], {names.MANAGED_BY: "Helm"}), "u1", "m")
    assert not ownership.owned_by(child(), "u1", "m")
    assert not ownership.owned_by(child([{"kind": "HelmRelease", "name": "x", "uid": "h"}], ours), "u1", "m")
    assert not ownership.owned_by(child([], {**ours, names.MODEL_LABEL: "other"}), "u1", "m")
    assert ownership.describe(child([], {names.MANAGED_BY: "Helm"})) == "Service s/harmony-m (managed by Helm)"


def test_reserved_names() -> None:
    assert names.reserved("router") and names.reserved("router-models") and names.reserved("operator")
    assert names.child_name("router-models") == names.ROUTER_CONFIGMAP
    assert names.reserved("whisper-base") is None


# --- drift -------------------------------------------------------------------------------------

def test_drift_ignores_server_defaults_and_sees_edits() -> None:
    desired = manifests.service("m", "s")
    actual = {**desired, "spec": {**desired["spec"], "clusterIP": "10.0.0.1", "ports": [
        {**desired["spec"]["ports"][0], "nodePort": None}]}, "status": {"loadBalancer": {}}}
    assert not drift.child_drifted(desired, actual)
    edited = {**actual, "spec": {**actual["spec"], "ports": [{**actual["spec"]["ports"][0], "port": 81}]}}
    assert drift.child_drifted(desired, edited)
    added = {**actual, "spec": {**actual["spec"], "selector": {**desired["spec"]["selector"], "app": "x"}}}
    assert drift.child_drifted(desired, added)
    # The repair removes the key added by hand (a merge patch alone would keep it).
    patch = merge_patch(drift.with_removals(None, desired, added), desired)
    assert patch["spec"]["selector"]["app"] is None
    assert drift.with_removals(None, desired, actual) is None


# --- aliases -----------------------------------------------------------------------------------

def named(name: str, *alias: str) -> NamedModel:
    return NamedModel.model_validate({"name": name, "task": "stt", "backend": "b", "source": {"package": "p"},
                                      "aliases": list(alias)})


def test_alias_conflicts_name_both_sides_and_the_winner() -> None:
    found = aliases.conflicts([named("a", "whisper-1"), named("b", "whisper-1"), named("c", "x")])
    assert set(found) == {"a", "b"}
    assert "SpeechModel b" in found["a"] and "SpeechModel a" in found["b"]
    assert "serves it from a" in found["b"]
    # An alias that is another model's name: the model's own name wins.
    found = aliases.conflicts([named("a", "b"), named("b")])
    assert set(found) == {"a", "b"} and "serves it from b" in found["a"]
    assert aliases.conflicts([named("a", "x", "x"), named("b", "y")]) == {}


def test_finalizers_are_off_unless_asked_for() -> None:
    assert OperatorSettings.from_env({}).finalizers is False
    assert OperatorSettings.from_env({"HARMONY_FINALIZERS": "true"}).finalizers is True
    assert OperatorSettings.from_env({"HARMONY_FINALIZERS": "false"}).finalizers is False


def test_the_measured_cold_start_is_a_status_field_and_a_printer_column() -> None:
    from harmony_operator import idle
    from services.core.contracts.crd import speech_model_crd

    assert status.model_status("m", "s", deployment(ready=1), None, AT).coldStartSeconds is None
    woken = deployment(ready=1)
    woken["metadata"]["annotations"] = {idle.COLD_START: "412.34"}
    result = status.model_status("m", "s", woken, None, AT)
    assert result.coldStartSeconds == 412.3 and status.dump(result)["coldStartSeconds"] == 412.3
    version = speech_model_crd()["spec"]["versions"][0]
    assert version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["coldStartSeconds"][
        "type"] == "number"
    assert any(c["jsonPath"] == ".status.coldStartSeconds" for c in version["additionalPrinterColumns"])


def test_scale_to_zero_waits_well_past_the_routers_hold_by_default() -> None:
    from services.core.contracts.specs import AutoscalingSpec

    defaults = AutoscalingSpec(min_replicas=0)
    assert defaults.scale_to_zero_after >= 2 * defaults.hold_timeout_s
