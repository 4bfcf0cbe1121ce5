"""What the handlers do: apply a SpeechModel's children, write status, keep the router's ConfigMap in sync.

Every function here is idempotent (create, or patch on 409), so kopf may call it on
create, update, resume, the periodic pass or a deleted child alike.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from pydantic import ValidationError

from services.core.contracts.specs import NamedModel, NamedRoute, SpeechModelSpec
from services.core.contracts.wire import SpeechModelStatus

from . import aliases, drift, idle, manifests, names, ownership, pulls, status
from .kube import Kube, KubeError, NotOwned, Owns
from .settings import OperatorSettings

log = logging.getLogger("harmony.operator")


@dataclass
class Context:
    kube: Kube
    settings: OperatorSettings
    _locks: dict[str, threading.Lock] = field(default_factory=lambda: defaultdict(threading.Lock))
    # (kind, namespace, name) -> what the operator last sent: an event of an object that no
    # longer holds it (edited by hand) triggers a repair at once.
    applied: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def namespace_lock(self, namespace: str) -> threading.Lock:
        return self._locks[namespace]


def validation_message(exc: ValidationError) -> str:
    return "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def parse_model(spec: dict[str, Any] | None) -> SpeechModelSpec:
    return SpeechModelSpec.model_validate(dict(spec or {}))


def _deleting(body: dict[str, Any]) -> bool:
    return bool(body.get("metadata", {}).get("deletionTimestamp"))


def write_status(ctx: Context, kind: str, body: dict[str, Any], new: status.Status) -> None:
    """Patch the status subresource of ``body`` (a SpeechModel or SpeechRoute), unless nothing changed."""
    if not status.same(body.get("status"), new):
        meta = body["metadata"]
        ctx.kube.patch(kind, meta["namespace"], meta["name"], {"status": status.dump(new)}, subresource="status")


def write_model_status(ctx: Context, body: dict[str, Any], deployment: dict[str, Any] | None,
                       problem: status.Problem | None = None, applied: bool = True,
                       spec: SpeechModelSpec | None = None) -> SpeechModelStatus:
    """Write the SpeechModel's status; ``spec`` (valid) adds what its pods' pulls say (hf and url sources)."""
    meta = body["metadata"]
    pull = pull_state(ctx, meta["name"], meta["namespace"], spec) if spec is not None and deployment else None
    new = status.model_status(meta["name"], meta["namespace"], deployment, body.get("status"), status.now(),
                              meta.get("generation"), problem, applied, pull)
    write_status(ctx, "SpeechModel", body, new)
    return new


# Lines of a running pull's log read per status pass: its last progress line, and a few stray lines after it
# (a library's warning on stderr) that would otherwise hide it.
PULL_LOG_LINES = 5


def pull_state(ctx: Context, name: str, namespace: str, spec: SpeechModelSpec) -> pulls.PullState | None:
    """What the ``pull`` init containers of the model's current pods say (None: its source is not pulled).

    While one runs, the last lines of its log (one read per pass) give its bytes. Pods the API does not let the
    operator list (an older chart's Role) leave it unknown, logged; a log it cannot read, only the bytes."""
    if not manifests.pulls(spec):
        return None
    try:
        pods = ctx.kube.list("Pod", namespace, names.selector_string(name))
    except KubeError as exc:
        log.warning("SpeechModel %s/%s: cannot list its pods for status.weights: %s", namespace, name, exc)
        pods = []
    pods = [p for p in pods if (p.get("metadata", {}).get("labels") or {}).get(names.MODEL_LABEL) == name]
    spec_hash = manifests.config_hash(name, spec)
    state = pulls.pull_state(pods, spec.source, spec_hash)
    if not state.tail_pod:
        return state
    try:
        tail = ctx.kube.pod_log(namespace, state.tail_pod, pulls.PULL, PULL_LOG_LINES)
    except Exception as exc:  # noqa: BLE001 - the bytes are a nicety: no Role for pods/log, pod gone, timeout
        log.debug("SpeechModel %s/%s: cannot read the pull log of pod %s: %s", namespace, name, state.tail_pod, exc)
        return state
    return pulls.pull_state(pods, spec.source, spec_hash, {state.tail_pod: tail})


def _temporary(ctx: Context, retry: int, what: str, exc: Exception) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{what}: {exc}", delay=ctx.settings.retry_delay(retry))


def kubernetes_problem(name: str, spec: SpeechModelSpec,
                       settings: OperatorSettings | None = None) -> status.Problem | None:
    """What the CRD's rules refuse but an object stored before them may hold, reserved names, and what the cluster
    cannot run (image volumes where ``settings.image_volumes`` is off)."""
    why = names.reserved(name)
    if why:
        return status.Problem("NameConflict", why, cause="ReservedName")
    if settings is not None and not settings.image_volumes and manifests.uses_image_volumes(spec):
        return status.Problem("InvalidSpec", "source.oci and volumes[].image are image volumes, which need "
                                             "Kubernetes 1.33+ with the ImageVolume feature; this cluster has none "
                                             "(the chart's operator.imageVolumes)")
    if spec.device == "cuda" and not spec.resources.has_accelerator:
        return status.Problem("InvalidSpec", "spec.device is cuda but the spec asks for no GPU (resources.gpu, "
                                             "accelerators or claims): the pod would see no GPU")
    return None


def _parsed(ctx: Context, body: dict[str, Any]) -> SpeechModelSpec:
    """The valid spec, or its status says why not (InvalidSpec, NameConflict) and kopf gives up until a change."""
    name = body["metadata"]["name"]
    try:
        spec = parse_model(body.get("spec"))
        problem = kubernetes_problem(name, spec, ctx.settings)
    except ValidationError as exc:
        problem = status.Problem("InvalidSpec", validation_message(exc))
    if problem is not None:
        write_model_status(ctx, body, None, problem)
        raise kopf.PermanentError(f"SpeechModel {name}: {problem.reason}: {problem.message}")
    return spec


def _previous_children(ctx: Context, name: str, namespace: str, old_spec: dict[str, Any] | None
                       ) -> dict[str, dict[str, Any]]:
    if old_spec is None:
        return {}
    try:
        return {c["kind"]: c for c in manifests.model_children(name, namespace, parse_model(old_spec), ctx.settings)}
    except ValidationError:
        return {}  # the old spec was invalid: nothing of it was applied


def _owner_check(body: dict[str, Any]) -> Owns:
    meta = body["metadata"]
    return lambda obj: ownership.owned_by(obj, meta.get("uid"), meta["name"])


def reconcile_model(ctx: Context, body: dict[str, Any], old_spec: dict[str, Any] | None = None,
                    retry: int = 0) -> SpeechModelStatus | None:
    """Create or patch everything the SpeechModel owns, then write its status.

    ``old_spec`` (on an update) lets the patches remove fields the new spec dropped.
    Invalid specs are permanent errors (status Degraded InvalidSpec). An object under a
    child's name that is not the model's is a NameConflict: nothing at all is applied
    (checked again at the next change or periodic pass). API errors are temporary (status
    Degraded ApplyFailed, retried with backoff).
    """
    if _deleting(body):
        return None
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    spec = _parsed(ctx, body)
    children = manifests.model_children(name, namespace, spec, ctx.settings)
    # the object as the API server sent it: kopf names that shape RawBody (a TypedDict), which a dict cannot be
    kopf.adopt(children, owner=kopf.Body(cast(kopf.RawBody, body)))
    owns = _owner_check(body)
    deployment = None
    try:
        existing = {c["kind"]: ctx.kube.get(c["kind"], namespace, c["metadata"]["name"]) for c in children}
        foreign = [obj for obj in existing.values() if obj is not None and not owns(obj)]
        if foreign:
            raise NotOwned(foreign[0])
        deployment = _apply_children(ctx, spec, children, _previous_children(ctx, name, namespace, old_spec),
                                     existing, owns)
    except NotOwned as exc:
        write_model_status(ctx, body, None, status.Problem("NameConflict", exc.message))
        raise kopf.PermanentError(f"SpeechModel {name}: {exc.message}") from None
    except KubeError as exc:
        try:
            write_model_status(ctx, body, deployment, status.Problem("ApplyFailed", str(exc)), spec=spec)
        except KubeError:
            pass
        raise _temporary(ctx, retry, f"applying the children of SpeechModel {name} failed", exc) from None
    return write_model_status(ctx, body, deployment, spec=spec)


def _apply_children(ctx: Context, spec: SpeechModelSpec, children: list[dict[str, Any]],
                    previous: dict[str, dict[str, Any]], existing: dict[str, dict[str, Any] | None],
                    owns: Owns) -> dict[str, Any] | None:
    """Create or patch each child (all checked to be ours, or absent); the Deployment as applied."""
    deployment = None
    for child in children:
        meta = child["metadata"]
        patch_body, before = child, previous.get(child["kind"])
        if child["kind"] == "Deployment" and spec.autoscaling:
            # The HPA owns replicas: set once at creation, never patched (nor removed).
            patch_body = copy.deepcopy(child)
            patch_body["spec"].pop("replicas", None)
            if before:
                before = copy.deepcopy(before)
                before["spec"].pop("replicas", None)
        before = drift.with_removals(before, patch_body, existing[child["kind"]])
        applied = ctx.kube.apply(child, before, patch_body=patch_body, owns=owns, existing=existing[child["kind"]])
        ctx.applied[(child["kind"], meta["namespace"], meta["name"])] = patch_body
        if child["kind"] == "Deployment":
            deployment = applied
    _delete_unwanted_autoscalers(ctx, children, owns)
    _delete_unwanted_service_accounts(ctx, children, previous, owns)
    return deployment


def _delete_unwanted_service_accounts(ctx: Context, children: list[dict[str, Any]],
                                      previous: dict[str, dict[str, Any]], owns: Owns) -> None:
    """spec.service_account dropped or renamed: the account made for it before goes, if it is ours (the one of the
    default name is looked for even without the old spec: dropped while the operator was away)."""
    meta = children[0]["metadata"]
    wanted = {c["metadata"]["name"] for c in children if c["kind"] == "ServiceAccount"}
    before = previous.get("ServiceAccount")
    candidates = ({before["metadata"]["name"]} if before else set()) | (set() if wanted else {meta["name"]})
    for account in sorted(candidates - wanted):
        ctx.kube.delete_owned("ServiceAccount", meta["namespace"], account, owns)
        ctx.applied.pop(("ServiceAccount", meta["namespace"], account), None)


def _delete_unwanted_autoscalers(ctx: Context, children: list[dict[str, Any]], owns: Owns) -> None:
    """No autoscaling, or the other engine: its HPA or ScaledObject goes, if it is ours (absent is fine:
    KEDA may not be installed); so does a PodDisruptionBudget once under two replicas (harmony_operator.defaults)."""
    meta, wanted = children[0]["metadata"], {c["kind"] for c in children}
    for kind in ("HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget"):
        if kind not in wanted:
            ctx.kube.delete_owned(kind, meta["namespace"], meta["name"], owns)
            ctx.applied.pop((kind, meta["namespace"], meta["name"]), None)


def refresh_model_status(ctx: Context, namespace: str, model: str, deployment: dict[str, Any]) -> None:
    """A Deployment of ours changed (pods became ready, a rollout stalled): mirror it in the owner's status.

    An apply problem (ApplyFailed, NameConflict) stays: only a successful apply clears it. When
    the model's readiness changes, the routes that use it are checked again; a model that scales
    to zero also tells the router when it gains its first ready replica or loses its last.
    """
    owner = ctx.kube.get("SpeechModel", namespace, model)
    if owner is None or _deleting(owner) or not _owner_check(owner)(deployment):
        return
    try:
        spec = parse_model(owner.get("spec"))
    except ValidationError:
        return  # its status says InvalidSpec; leave that
    was_ready = status.ready_state(owner.get("status"))[0]
    before = int((owner.get("status") or {}).get("readyReplicas") or 0)
    new = write_model_status(ctx, owner, deployment, applied=False, spec=spec)
    zero = bool(spec.autoscaling and spec.autoscaling.scales_to_zero)
    woke_or_slept = zero and (before == 0) != (new.readyReplicas == 0)
    if status.ready_state(new)[0] != was_ready or woke_or_slept:
        sync_namespace(ctx, namespace)


def on_pod_event(ctx: Context, namespace: str, pod: dict[str, Any]) -> None:
    """A pod of a model that pulls its weights changed (its init container ``pull`` started, finished or
    failed): the owner's status follows (Downloading, PullFailed, ``status.weights``)."""
    model = ((pod.get("metadata") or {}).get("labels") or {}).get(names.MODEL_LABEL)
    if model:
        _refresh_with_deployment(ctx, namespace, model)


def downloading(body: dict[str, Any]) -> bool:
    """Whether the model's status says its pods are fetching their weights (a condition with reason Downloading)."""
    return any(c.reason == "Downloading" for c in status.previous_conditions(body.get("status")))


def refresh_pull_progress(ctx: Context, body: dict[str, Any]) -> None:
    """A model whose pods fetch their weights: its status again, with the running pull's bytes from its log (a
    running init container makes no pod event, so the periodic pass asks). Others are left alone."""
    meta = body["metadata"]
    if not _deleting(body) and downloading(body):
        _refresh_with_deployment(ctx, meta["namespace"], meta["name"])


def _refresh_with_deployment(ctx: Context, namespace: str, model: str) -> None:
    """The model's status again from its Deployment as it is now (none: nothing to mirror)."""
    deployment = ctx.kube.get("Deployment", namespace, names.child_name(model))
    if deployment is not None:
        refresh_model_status(ctx, namespace, model, deployment)


def on_child_event(ctx: Context, namespace: str, child: dict[str, Any]) -> None:
    """A child of ours changed: mirror a Deployment in its owner's status; repair one edited by hand."""
    meta = child.get("metadata", {})
    model = (meta.get("labels") or {}).get(names.MODEL_LABEL)
    if child.get("kind") == "Deployment" and model:
        refresh_model_status(ctx, namespace, model, child)
    desired = ctx.applied.get((child.get("kind", ""), namespace, meta.get("name", "")))
    if desired is None or not drift.child_drifted(desired, child):
        return
    if meta.get("name") == names.ROUTER_CONFIGMAP:
        log.info("ConfigMap %s/%s was edited: rewriting it", namespace, meta.get("name"))
        sync_namespace(ctx, namespace)
        return
    owner = ctx.kube.get("SpeechModel", namespace, model) if model else None
    if owner is None or _deleting(owner) or not _owner_check(owner)(child):
        return
    log.info("%s %s/%s was edited: repairing it", child.get("kind"), namespace, meta.get("name"))
    reconcile_model(ctx, owner)


def demand_lease(ctx: Context, namespace: str, name: str) -> dict[str, Any] | None:
    """The router's demand Lease of model ``name`` (None: never asked for)."""
    return ctx.kube.get("Lease", namespace, idle.lease_name(name))


def scale_to_zero_pass(ctx: Context, body: dict[str, Any], now: float | None = None,
                       lease: dict[str, Any] | None = None) -> int | None:
    """Wake a model at zero that was asked for, or put an idle one to zero (``engine: hpa``; see :mod:`idle`).

    ``lease``: its demand Lease, when the caller has it (else it is read). Returns the Deployment's new replica
    count, None when it was left alone. Idempotent."""
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        spec = parse_model(body.get("spec"))
    except ValidationError:
        return None
    autoscaling = spec.autoscaling
    if _deleting(body) or autoscaling is None or not idle.manages_zero(autoscaling):
        return None
    deployment = ctx.kube.get("Deployment", namespace, names.child_name(name))
    if deployment is None or not _owner_check(body)(deployment):
        return None  # not there yet, or someone else's (its status says NameConflict)
    now = time.time() if now is None else now
    marked = idle.ready_patch(deployment, now)
    if marked is not None:  # a woken model's first ready replica: its cold start is measured, its idle clock restarts
        deployment = ctx.kube.patch("Deployment", namespace, names.child_name(name), marked)
        write_model_status(ctx, body, deployment, applied=False, spec=spec)
    times = idle.Times.of(body, deployment, lease if lease is not None else demand_lease(ctx, namespace, name))
    replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
    target = idle.decide(autoscaling, replicas, times, now, idle.starting(deployment))
    if target is None:
        if times.active_since is None:
            ctx.kube.patch("Deployment", namespace, names.child_name(name), idle.first_seen_patch(now))
        return None
    log.info("SpeechModel %s/%s: %s", namespace, name, "woken by a request" if target else "idle: scaled to zero")
    deployment = ctx.kube.patch("Deployment", namespace, names.child_name(name), idle.scale_patch(target, now))
    # an apply problem stays until an apply succeeds
    write_model_status(ctx, body, deployment, applied=False, spec=spec)
    return target


def on_child_gone(ctx: Context, namespace: str, child: dict[str, Any]) -> None:
    """Someone deleted what we own (or the router's ConfigMap): put it back, unless its owner is going too."""
    meta = child.get("metadata", {})
    if meta.get("name") == names.ROUTER_CONFIGMAP:
        sync_namespace(ctx, namespace)
        return
    model = (meta.get("labels") or {}).get(names.MODEL_LABEL)
    if not model:
        return
    owner = ctx.kube.get("SpeechModel", namespace, model)
    if owner is None or _deleting(owner) or not _owner_check(owner)(child):
        return
    log.info("%s %s/%s was deleted: recreating it", child.get("kind"), namespace, meta.get("name"))
    reconcile_model(ctx, owner)


def finalize_model(ctx: Context, body: dict[str, Any], retry: int = 0) -> None:
    """With finalizers on: the router forgets the model, then its children go (pods first), ours only."""
    meta = body["metadata"]
    namespace, child = meta["namespace"], names.child_name(meta["name"])
    owns = _owner_check(body)
    try:
        sync_namespace(ctx, namespace)
        for kind in ("Deployment", "HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget", "Service",
                     "ConfigMap", "ServiceAccount"):
            named = _account_of(body) or child if kind == "ServiceAccount" else child
            ctx.kube.delete_owned(kind, namespace, named, owns)
            ctx.applied.pop((kind, namespace, named), None)
    except KubeError as exc:
        raise _temporary(ctx, retry, f"cleaning up after SpeechModel {meta['name']} failed", exc) from None


def _account_of(body: dict[str, Any]) -> str | None:
    """The name of the ServiceAccount made for the model (spec.service_account.name; None: the default)."""
    return ((body.get("spec") or {}).get("service_account") or {}).get("name")


def _named_models(items: list[dict[str, Any]],
                  settings: OperatorSettings | None = None) -> tuple[list[NamedModel], dict[str, dict[str, Any]]]:
    """Valid models (for the router) and every existing model by name (for the routes' check)."""
    valid, existing = [], {}
    for item in items:
        if _deleting(item):
            continue
        name = item["metadata"]["name"]
        existing[name] = item
        try:
            model = NamedModel.model_validate({**(item.get("spec") or {}), "name": name})
        except ValidationError:
            continue  # its own status says InvalidSpec
        conflict = next((c for c in status.previous_conditions(item.get("status")) if c.type == "NameConflict"), None)
        if kubernetes_problem(name, model, settings) is None and (conflict is None or conflict.status != "True"):
            valid.append(model)  # one whose objects are someone else's is not served: its Service is not ours
    return valid, existing


def _step_problems(route: NamedRoute, existing: dict[str, dict[str, Any]], valid: dict[str, NamedModel]
                   ) -> tuple[list[str], list[str], list[str]]:
    """Steps' missing models, steps whose model is of another task, and steps whose model is not Ready."""
    missing, wrong_task, unready = set(), [], []
    for step in route.steps:
        if step.model not in existing:
            missing.add(step.model)
            continue
        model = valid.get(step.model)
        if model is not None and model.task != step.task:
            wrong_task.append(f"step '{step.name}' (task {step.task.value}) names SpeechModel {step.model} "
                              f"of task {model.task.value}")
        ready, reason = status.ready_state(existing[step.model].get("status"))
        if model is None or not ready:
            unready.append(f"{step.name} (SpeechModel {step.model}: {reason if model else 'InvalidSpec'})")
    return sorted(missing), wrong_task, unready


def _route_state(item: dict[str, Any], existing: dict[str, dict[str, Any]], valid: dict[str, NamedModel],
                 public: set[str]) -> tuple[NamedRoute | None, status.SpeechRouteStatus]:
    """The route for the router (None: it may not be served) and its new status."""
    name, meta = item["metadata"]["name"], item["metadata"]
    try:
        route = NamedRoute.model_validate({**(item.get("spec") or {}), "name": name})
    except ValidationError as exc:
        new = status.route_status([], item.get("status"), status.now(), meta.get("generation"),
                                  status.Problem("InvalidSpec", validation_message(exc)))
        return None, new
    missing, wrong_task, unready = _step_problems(route, existing, valid)
    problem = None
    if name in public:
        problem = status.Problem("NameConflict", f"'{name}' is already a SpeechModel name or alias")
    elif wrong_task and not missing:
        problem = status.Problem("TaskMismatch", "; ".join(wrong_task))
    new = status.route_status(missing, item.get("status"), status.now(), meta.get("generation"), problem, unready)
    return (route if problem is None and not missing else None), new


def _report_alias_conflicts(ctx: Context, models: list[NamedModel], existing: dict[str, dict[str, Any]]) -> None:
    """An alias claimed by two SpeechModels (or one's alias that is another's name): a condition on both."""
    conflicts = aliases.conflicts(models)
    for model in models:
        item = existing[model.name]
        new = status.with_alias_conflict(item.get("status"), conflicts.get(model.name), status.now())
        if new is not None:
            write_status(ctx, "SpeechModel", item, new)


def sync_namespace(ctx: Context, namespace: str) -> None:
    """Rewrite the router's ConfigMap from every SpeechModel and SpeechRoute, and each route's status.

    Serialised per namespace, and always from a fresh listing, so the last writer is right.
    A ``harmony-router-models`` ConfigMap that is not the operator's is left alone (NotOwned).
    """
    with ctx.namespace_lock(namespace):
        items = ctx.kube.list("SpeechModel", namespace)
        models, existing = _named_models(items, ctx.settings)
        ready = {i["metadata"]["name"]: int((i.get("status") or {}).get("readyReplicas") or 0) for i in items}
        _report_alias_conflicts(ctx, models, existing)
        valid = {m.name: m for m in models}
        public = {n for m in models for n in (m.name, *m.aliases)}
        routes, route_items = [], ctx.kube.list("SpeechRoute", namespace)
        for item in route_items:
            if _deleting(item):
                continue
            route, new = _route_state(item, existing, valid, public)
            write_status(ctx, "SpeechRoute", item, new)
            if route is not None:
                routes.append(route)
        owners = manifests.table_owners(items, route_items)
        if not owners:  # none left: the table went (or goes) with the last of them; not written again
            ctx.applied.pop(("ConfigMap", namespace, names.ROUTER_CONFIGMAP), None)
            return
        configmap = manifests.router_configmap(namespace, models, routes, ready, owners)
        ctx.kube.apply(configmap)
        ctx.applied[("ConfigMap", namespace, names.ROUTER_CONFIGMAP)] = configmap


def sync_namespace_or_retry(ctx: Context, namespace: str, retry: int = 0) -> None:
    try:
        sync_namespace(ctx, namespace)
    except KubeError as exc:
        raise _temporary(ctx, retry, f"updating {names.ROUTER_CONFIGMAP} in {namespace} failed", exc) from None
