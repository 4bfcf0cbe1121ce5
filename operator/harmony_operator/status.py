"""Pure status builders: conditions Ready / Progressing / Degraded from what the cluster reports.

They return the typed status of :mod:`services.core.wire` (the classes the CRDs' status
schemas are generated from); :func:`dump` turns one into the JSON the API stores.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Union

from pydantic import ValidationError
from services.core.wire import Condition, SpeechModelStatus, SpeechRouteStatus
from . import idle, names

Status = Union[SpeechModelStatus, SpeechRouteStatus]
# A previous status: typed (from a builder here) or as the API returned it (a dict).
Previous = Union[Status, dict[str, Any], None]
State = tuple[bool, str, str]  # ok, reason, message


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Problem:
    """Something that keeps the operator from doing its job, shown as Degraded (or Ready False)."""

    reason: str   # CamelCase, e.g. ApplyFailed, InvalidSpec
    message: str


def dump(status: Status) -> dict[str, Any]:
    """The status as the API stores it (unset fields left out)."""
    return status.model_dump(mode="json", exclude_none=True)


def previous_conditions(previous: Previous) -> list[Condition]:
    """The conditions of a previous status; one the API holds that is not valid is ignored."""
    if isinstance(previous, (SpeechModelStatus, SpeechRouteStatus)):
        return previous.conditions
    out = []
    for item in (previous or {}).get("conditions") or []:
        try:
            out.append(Condition.model_validate(item))
        except ValidationError:
            continue
    return out


def condition(kind: str, ok: bool, reason: str, message: str, previous: list[Condition], at: str,
              generation: int | None = None) -> Condition:
    """A condition whose lastTransitionTime moves only when its status changes."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.type == kind), None)
    since = before.lastTransitionTime if before and before.status == status and before.lastTransitionTime else at
    return Condition(type=kind, status=status, reason=reason, message=message, lastTransitionTime=since,
                     observedGeneration=generation)


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in deployment.get("status", {}).get("conditions") or [] if c.get("type") == kind), {})


def _counts(deployment: dict[str, Any] | None) -> tuple[int, int, int, int]:
    """desired, total, ready and updated replicas of the Deployment (None: not there yet)."""
    spec, status = (deployment or {}).get("spec", {}), (deployment or {}).get("status", {})
    return (int(spec.get("replicas", 1) or 0), int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0))


def _ready(name: str, deployment: dict[str, Any] | None) -> State:
    desired, _, ready, _ = _counts(deployment)
    if deployment is None:
        return False, "DeploymentMissing", "the model service is not deployed yet"
    if desired == 0:
        # Scaled to zero for want of requests (autoscaling min_replicas 0) is a ready state: a request wakes it.
        woken_by_request = idle.idle_message(deployment)
        return (True, "ScaledToZero", woken_by_request) if woken_by_request else \
            (False, "ScaledToZero", "spec.replicas is 0")
    if ready > 0:
        return True, "MinimumReplicasReady", f"{ready}/{desired} replicas ready"
    return False, "NoReadyReplicas", (f"0/{desired} replicas ready (loading the model, or failing: "
                                      f"see the pods of {names.child_name(name)})")


def _progressing(deployment: dict[str, Any] | None) -> State:
    desired, replicas, ready, updated = _counts(deployment)
    if deployment is None:
        return True, "Creating", "creating the model service"
    if updated < desired or ready < desired or replicas > desired:
        return True, "RollingOut", f"{updated} updated, {ready} ready, {replicas} total of {desired}"
    return False, "RolloutComplete", f"{ready}/{desired} replicas ready"


def _degraded(deployment: dict[str, Any] | None, problem: Problem | None) -> State:
    desired, _, ready, updated = _counts(deployment)
    stalled = _deployment_condition(deployment or {}, "Progressing")
    if problem is not None:
        return True, problem.reason, problem.message
    if stalled.get("reason") == "ProgressDeadlineExceeded":
        return True, "ProgressDeadlineExceeded", stalled.get("message", "the rollout stalled")
    if deployment is not None and desired > 0 and ready == 0 and updated >= desired and \
            _deployment_condition(deployment, "Available").get("status") == "False":
        return True, "ReplicasUnavailable", "no replica is ready"
    return False, "AsExpected", ""


def model_status(name: str, namespace: str, deployment: dict[str, Any] | None, previous: Previous,
                 at: str, generation: int | None = None, problem: Problem | None = None) -> SpeechModelStatus:
    """The SpeechModel's status from its Deployment (None: not there yet) and an apply problem, if any."""
    before = previous_conditions(previous)
    states = (("Ready", _ready(name, deployment)), ("Progressing", _progressing(deployment)),
              ("Degraded", _degraded(deployment, problem)))
    _, replicas, ready, _ = _counts(deployment)
    return SpeechModelStatus(
        replicas=replicas, readyReplicas=ready, selector=names.selector_string(name),
        endpoint=names.endpoint(name, namespace), observedGeneration=generation,
        conditions=[condition(kind, *state, before, at, generation) for kind, state in states])


def route_status(missing: list[str], previous: Previous, at: str, generation: int | None = None,
                 problem: Problem | None = None) -> SpeechRouteStatus:
    """Ready when every step names an existing SpeechModel; MissingModel names those that do not."""
    if problem is not None:
        ready: State = (False, problem.reason, problem.message)
    elif missing:
        ready = (False, "MissingModel", "steps name SpeechModels that do not exist: " + ", ".join(missing))
    else:
        ready = (True, "ModelsExist", "every step's SpeechModel exists")
    return SpeechRouteStatus(missingModels=missing, observedGeneration=generation,
                             conditions=[condition("Ready", *ready, previous_conditions(previous), at, generation)])


def same(old: Previous, new: Status) -> bool:
    """Equal but for transition times: saves a status write that would change nothing."""
    def strip(status: Previous) -> dict[str, Any]:
        data = dump(status) if isinstance(status, (SpeechModelStatus, SpeechRouteStatus)) else dict(status or {})
        data["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                              for c in data.get("conditions") or []]
        return data
    return strip(old) == strip(new)
