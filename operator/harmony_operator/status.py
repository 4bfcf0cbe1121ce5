"""Pure status builders: conditions Ready / Progressing / Degraded from what the cluster reports."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from . import names


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Problem:
    """Something that keeps the operator from doing its job, shown as Degraded (or Ready False)."""

    reason: str   # CamelCase, e.g. ApplyFailed, InvalidSpec
    message: str


def condition(kind: str, ok: bool, reason: str, message: str, previous: list[dict[str, Any]], at: str,
              generation: int | None = None) -> dict[str, Any]:
    """A condition whose lastTransitionTime moves only when its status changes."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = before["lastTransitionTime"] if before and before.get("status") == status \
        and before.get("lastTransitionTime") else at
    out = {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in deployment.get("status", {}).get("conditions") or [] if c.get("type") == kind), {})


def model_status(name: str, namespace: str, deployment: dict[str, Any] | None, previous: dict[str, Any] | None,
                 at: str, generation: int | None = None, problem: Problem | None = None) -> dict[str, Any]:
    """The SpeechModel's status from its Deployment (None: not there yet) and an apply problem, if any."""
    previous = previous or {}
    conditions = previous.get("conditions") or []
    dep_spec = (deployment or {}).get("spec", {})
    dep_status = (deployment or {}).get("status", {})
    desired = int(dep_spec.get("replicas", 1) or 0)
    replicas = int(dep_status.get("replicas") or 0)
    ready = int(dep_status.get("readyReplicas") or 0)
    updated = int(dep_status.get("updatedReplicas") or 0)

    if deployment is None:
        ready_c = (False, "DeploymentMissing", "the model service is not deployed yet")
    elif desired == 0:
        ready_c = (False, "ScaledToZero", "spec.replicas is 0")
    elif ready > 0:
        ready_c = (True, "MinimumReplicasReady", f"{ready}/{desired} replicas ready")
    else:
        ready_c = (False, "NoReadyReplicas", f"0/{desired} replicas ready (loading the model, or failing: "
                                              f"see the pods of {names.child_name(name)})")

    if deployment is None:
        progressing = (True, "Creating", "creating the model service")
    elif updated < desired or ready < desired or replicas > desired:
        progressing = (True, "RollingOut", f"{updated} updated, {ready} ready, {replicas} total of {desired}")
    else:
        progressing = (False, "RolloutComplete", f"{ready}/{desired} replicas ready")

    stalled = _deployment_condition(deployment or {}, "Progressing")
    if problem is not None:
        degraded = (True, problem.reason, problem.message)
    elif stalled.get("reason") == "ProgressDeadlineExceeded":
        degraded = (True, "ProgressDeadlineExceeded", stalled.get("message", "the rollout stalled"))
    elif deployment is not None and desired > 0 and ready == 0 and \
            _deployment_condition(deployment, "Available").get("status") == "False" and updated >= desired:
        degraded = (True, "ReplicasUnavailable", "no replica is ready")
    else:
        degraded = (False, "AsExpected", "")

    out: dict[str, Any] = {
        "replicas": replicas,
        "readyReplicas": ready,
        "selector": names.selector_string(name),
        "endpoint": names.endpoint(name, namespace),
        "conditions": [condition(kind, *state, conditions, at, generation)
                       for kind, state in (("Ready", ready_c), ("Progressing", progressing), ("Degraded", degraded))],
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def route_status(missing: list[str], previous: dict[str, Any] | None, at: str, generation: int | None = None,
                 problem: Problem | None = None) -> dict[str, Any]:
    """Ready when every step names an existing SpeechModel; MissingModel names those that do not."""
    conditions = (previous or {}).get("conditions") or []
    if problem is not None:
        ready = (False, problem.reason, problem.message)
    elif missing:
        ready = (False, "MissingModel", "steps name SpeechModels that do not exist: " + ", ".join(missing))
    else:
        ready = (True, "ModelsExist", "every step's SpeechModel exists")
    out: dict[str, Any] = {"missingModels": missing,
                           "conditions": [condition("Ready", *ready, conditions, at, generation)]}
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def same(a: dict[str, Any] | None, b: dict[str, Any]) -> bool:
    """Equal but for transition times: saves a status write that would change nothing."""
    def strip(status: dict[str, Any] | None) -> dict[str, Any]:
        status = dict(status or {})
        status["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                for c in status.get("conditions") or []]
        return status
    return strip(a) == strip(b)
