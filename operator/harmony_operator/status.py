"""Pure status builders: conditions Ready / Progressing / Degraded from what the cluster reports.

A model whose pods fetch their weights first (an hf or url source: the init container ``pull``) shows it
with the reason ``Downloading`` on Ready (while no replica is ready) and Progressing, a failed pull as
Degraded ``PullFailed`` (and Ready False ``PullFailed`` while no replica is ready), and the fetch itself
(revision, bytes) in ``status.weights`` (see :mod:`harmony_operator.pulls`).

They return the typed status of :mod:`services.core.contracts.wire` (the classes the CRDs' status
schemas are generated from); :func:`dump` turns one into the JSON the API stores.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.core.contracts.wire import Condition, SpeechModelStatus, SpeechRouteStatus, WeightsProgress

from . import idle, names
from .pulls import PullState

Status = SpeechModelStatus | SpeechRouteStatus
# A previous status: typed (from a builder here) or as the API returned it (a dict).
Previous = Status | dict[str, Any] | None
State = tuple[bool, str, str]  # ok, reason, message


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Problem:
    """Something that keeps the operator from doing its job, shown as Degraded (or Ready False)."""

    reason: str   # CamelCase, e.g. ApplyFailed, InvalidSpec
    message: str
    cause: str = ""  # NameConflict: the NameConflict condition's reason (default ObjectNotOwned)


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


# Degraded reasons that only an apply sets or clears (a Deployment event must not clear them).
APPLY_REASONS = frozenset({"ApplyFailed", "NameConflict", "InvalidSpec"})
# Conditions another writer owns, carried over as they are (sync_namespace sets AliasConflict).
CARRIED = ("AliasConflict",)


def _deployment_condition(deployment: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in deployment.get("status", {}).get("conditions") or [] if c.get("type") == kind), {})


def _counts(deployment: dict[str, Any] | None) -> tuple[int, int, int, int]:
    """desired, total, ready and updated replicas of the Deployment (None: not there yet)."""
    spec, status = (deployment or {}).get("spec", {}), (deployment or {}).get("status", {})
    return (int(spec.get("replicas", 1) or 0), int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0), int(status.get("updatedReplicas") or 0))


def unobserved(deployment: dict[str, Any] | None) -> str | None:
    """Why the Deployment's status does not yet describe its spec (None: it does, or cannot be told)."""
    generation = ((deployment or {}).get("metadata") or {}).get("generation")
    observed = (deployment or {}).get("status", {}).get("observedGeneration")
    if generation is None or (observed is not None and observed >= generation):
        return None
    return f"the Deployment controller has not yet seen generation {generation} (observed: {observed})"


def _ready(name: str, deployment: dict[str, Any] | None, problem: Problem | None, pull: PullState | None) -> State:
    desired, _, ready, _ = _counts(deployment)
    if deployment is None:
        if problem is not None:
            return False, problem.reason, problem.message
        return False, "DeploymentMissing", "the model service is not deployed yet"
    if desired == 0:
        # Scaled to zero for want of requests (autoscaling min_replicas 0) is a ready state: a request wakes it.
        woken_by_request = idle.idle_message(deployment)
        return (True, "ScaledToZero", woken_by_request) if woken_by_request else \
            (False, "ScaledToZero", "spec.replicas is 0")
    cold = idle.cold_start_s(deployment)
    if ready > 0:
        measured = f" (last cold start from zero: {cold:.0f} s)" if cold is not None else ""
        return True, "MinimumReplicasReady", f"{ready}/{desired} replicas ready{measured}"
    if pull is not None and pull.phase == "downloading":
        return False, "Downloading", pull.message
    if pull is not None and pull.phase == "failed":
        return False, "PullFailed", pull.message
    expected = f"; the last cold start from zero took {cold:.0f} s" if cold is not None else ""
    return False, "NoReadyReplicas", (f"0/{desired} replicas ready (loading the model, or failing: "
                                      f"see the pods of {names.child_name(name)}){expected}")


def _progressing(deployment: dict[str, Any] | None, problem: Problem | None, pull: PullState | None) -> State:
    desired, replicas, ready, updated = _counts(deployment)
    if deployment is None:
        if problem is not None:
            return False, problem.reason, "nothing is applied until this is resolved"
        return True, "Creating", "creating the model service"
    pending = unobserved(deployment)
    if pending:
        return True, "RolloutPending", pending
    stalled = _deployment_condition(deployment, "Progressing")
    if stalled.get("status") == "False":
        return False, stalled.get("reason") or "ProgressDeadlineExceeded", stalled.get("message", "")
    if pull is not None and pull.phase == "downloading":
        return True, "Downloading", pull.message
    if updated < desired or ready < desired or replicas > desired:
        return True, "RollingOut", f"{updated} updated, {ready} ready, {replicas} total of {desired}"
    return False, "RolloutComplete", f"{ready}/{desired} replicas ready"


def _degraded(deployment: dict[str, Any] | None, problem: Problem | None, pull: PullState | None) -> State:
    """Something is wrong, not merely in progress: a rollout that loads weights is not Degraded."""
    if problem is not None:
        return True, problem.reason, problem.message
    if pull is not None and pull.phase == "failed":
        return True, "PullFailed", pull.message
    if deployment is None or unobserved(deployment):
        return False, "AsExpected", ""
    failure = _deployment_condition(deployment, "ReplicaFailure")
    if failure.get("status") == "True":
        return True, "ReplicaFailure", f"{failure.get('reason') or 'FailedCreate'}: {failure.get('message', '')}"
    stalled = _deployment_condition(deployment, "Progressing")
    if stalled.get("status") == "False" and stalled.get("reason") == "ProgressDeadlineExceeded":
        return True, "ProgressDeadlineExceeded", stalled.get("message") or "the rollout stalled"
    return False, "AsExpected", ""


def _kept_problem(before: list[Condition]) -> Problem | None:
    """The apply problem a previous status reports (kept when no apply ran)."""
    degraded = next((c for c in before if c.type == "Degraded"), None)
    if degraded is not None and degraded.status == "True" and degraded.reason in APPLY_REASONS:
        cause = next((c.reason for c in before if c.type == "NameConflict" and c.status == "True"), "")
        return Problem(degraded.reason, degraded.message, cause)
    return None


def weights(pull: PullState | None, previous: Previous) -> WeightsProgress | None:
    """``status.weights``: what the pods' pulls say; while no pod says anything (none yet, scaled to zero), what the
    previous status said of the same source; None for a source that is not pulled."""
    if pull is None:
        return None
    if pull.weights is not None:
        return pull.weights
    before = previous.weights if isinstance(previous, SpeechModelStatus) else \
        (previous or {}).get("weights") if isinstance(previous, dict) else None
    try:
        kept = WeightsProgress.model_validate(before) if isinstance(before, dict) else before
    except ValidationError:
        return None
    return kept if kept is not None and kept.source == pull.source else None


def model_status(name: str, namespace: str, deployment: dict[str, Any] | None, previous: Previous,
                 at: str, generation: int | None = None, problem: Problem | None = None,
                 applied: bool = True, pull: PullState | None = None) -> SpeechModelStatus:
    """The SpeechModel's status from its Deployment (None: not there, or not ours), an apply problem, and the
    pulls of its pods (None: its source is not pulled).

    ``applied``: an apply just ran, and ``problem`` is its outcome. Otherwise (a Deployment
    event) the previous apply problem, if any, stays: only a successful apply clears it.
    A NameConflict problem also sets a ``NameConflict`` condition naming the object.
    """
    before = previous_conditions(previous)
    if not applied:
        problem = _kept_problem(before)
    states = [("Ready", _ready(name, deployment, problem, pull)),
              ("Progressing", _progressing(deployment, problem, pull)),
              ("Degraded", _degraded(deployment, problem, pull))]
    if problem is not None and problem.reason == "NameConflict":
        states.append(("NameConflict", (True, problem.cause or "ObjectNotOwned", problem.message)))
    conditions = [condition(kind, *state, before, at, generation) for kind, state in states]
    conditions += [c for c in before if c.type in CARRIED]
    _, replicas, ready, _ = _counts(deployment)
    return SpeechModelStatus(
        replicas=replicas, readyReplicas=ready, selector=names.selector_string(name),
        endpoint=names.endpoint(name, namespace), observedGeneration=generation, conditions=conditions,
        weights=weights(pull, previous), coldStartSeconds=_cold_start(deployment))


def _cold_start(deployment: dict[str, Any] | None) -> float | None:
    cold = idle.cold_start_s(deployment)
    return None if cold is None else round(cold, 1)


def with_alias_conflict(previous: Previous, message: str | None, at: str) -> SpeechModelStatus | None:
    """The previous model status with its ``AliasConflict`` condition set (message) or gone (None).

    None when there is no valid previous status to amend (the model's first apply writes one).
    """
    try:
        current = previous if isinstance(previous, SpeechModelStatus) else \
            SpeechModelStatus.model_validate(previous or {})
    except ValidationError:
        return None
    if not current.conditions:
        return None
    kept = [c for c in current.conditions if c.type != "AliasConflict"]
    if message is not None:
        kept.append(condition("AliasConflict", True, "DuplicateAlias", message, current.conditions, at,
                              current.observedGeneration))
    return current.model_copy(update={"conditions": kept})


def ready_state(previous: Previous) -> tuple[bool, str]:
    """Whether a SpeechModel's status says Ready, and the reason (for the routes that use it)."""
    ready = next((c for c in previous_conditions(previous) if c.type == "Ready"), None)
    if ready is None:
        return False, "NoStatus"
    return ready.status == "True", ready.reason


def route_status(missing: list[str], previous: Previous, at: str, generation: int | None = None,
                 problem: Problem | None = None, unready: list[str] | None = None) -> SpeechRouteStatus:
    """Ready when every step names an existing SpeechModel of its task, and each of them is Ready.

    ``unready``: ``"step (SpeechModel model: Reason)"`` for each step whose model is not Ready.
    """
    unready = list(unready or [])
    if problem is not None:
        ready: State = (False, problem.reason, problem.message)
    elif missing:
        ready = (False, "MissingModel", "steps name SpeechModels that do not exist: " + ", ".join(missing))
    elif unready:
        ready = (False, "StepNotReady", "steps whose SpeechModel is not ready: " + ", ".join(unready))
    else:
        ready = (True, "StepsReady", "every step's SpeechModel exists and is ready")
    return SpeechRouteStatus(missingModels=missing, unreadySteps=unready, observedGeneration=generation,
                             conditions=[condition("Ready", *ready, previous_conditions(previous), at, generation)])


def same(old: Previous, new: Status) -> bool:
    """Equal but for transition times: saves a status write that would change nothing."""
    def strip(status: Previous) -> dict[str, Any]:
        data = dump(status) if isinstance(status, (SpeechModelStatus, SpeechRouteStatus)) else dict(status or {})
        data["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                              for c in data.get("conditions") or []]
        return data
    return strip(old) == strip(new)
