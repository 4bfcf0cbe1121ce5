"""What the handlers do: apply a SpeechModel's children, write status, keep the router's ConfigMap in sync.

Every function here is idempotent (create, or patch on 409), so kopf may call it on
create, update, resume, a timer tick or a deleted child alike.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import kopf
from services.core.specs import NamedModel, NamedRoute, SpeechModelSpec
from services.core.wire import SpeechModelStatus
from . import idle, manifests, names, status
from .kube import Kube, KubeError
from .settings import OperatorSettings
from pydantic import ValidationError

log = logging.getLogger("harmony.operator")


@dataclass
class Context:
    kube: Kube
    settings: OperatorSettings
    _locks: dict[str, threading.Lock] = field(default_factory=lambda: defaultdict(threading.Lock))

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
                       problem: status.Problem | None = None) -> SpeechModelStatus:
    meta = body["metadata"]
    new = status.model_status(meta["name"], meta["namespace"], deployment, body.get("status"), status.now(),
                              meta.get("generation"), problem)
    write_status(ctx, "SpeechModel", body, new)
    return new


def _temporary(ctx: Context, retry: int, what: str, exc: Exception) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"{what}: {exc}", delay=ctx.settings.retry_delay(retry))


def reconcile_model(ctx: Context, body: dict[str, Any], old_spec: dict[str, Any] | None = None,
                    retry: int = 0) -> SpeechModelStatus | None:
    """Create or patch everything the SpeechModel owns, then write its status.

    ``old_spec`` (on an update) lets the patches remove fields the new spec dropped.
    Invalid specs are permanent errors (status Degraded InvalidSpec); API errors are
    temporary (status Degraded ApplyFailed, retried with backoff).
    """
    if _deleting(body):
        return None
    meta = body["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        spec = parse_model(body.get("spec"))
    except ValidationError as exc:
        message = validation_message(exc)
        write_model_status(ctx, body, None, status.Problem("InvalidSpec", message))
        raise kopf.PermanentError(f"invalid SpeechModel {name}: {message}") from None

    previous: dict[str, dict[str, Any]] = {}
    if old_spec is not None:
        try:
            previous = {c["kind"]: c for c in manifests.model_children(name, namespace, parse_model(old_spec),
                                                                       ctx.settings)}
        except ValidationError:
            pass  # the old spec was invalid: nothing of it was applied

    children = manifests.model_children(name, namespace, spec, ctx.settings)
    kopf.adopt(children, owner=body)
    deployment = None
    try:
        for child in children:
            patch_body, before = child, previous.get(child["kind"])
            if child["kind"] == "Deployment" and spec.autoscaling:
                # The HPA owns replicas: set once at creation, never patched (nor removed).
                patch_body = copy.deepcopy(child)
                patch_body["spec"].pop("replicas", None)
                if before:
                    before = copy.deepcopy(before)
                    before["spec"].pop("replicas", None)
            applied = ctx.kube.apply(child, before, patch_body=patch_body)
            if child["kind"] == "Deployment":
                deployment = applied
        _delete_unwanted_autoscalers(ctx, name, namespace, spec)
    except KubeError as exc:
        try:
            write_model_status(ctx, body, deployment, status.Problem("ApplyFailed", str(exc)))
        except KubeError:
            pass
        raise _temporary(ctx, retry, f"applying the children of SpeechModel {name} failed", exc) from None
    return write_model_status(ctx, body, deployment)


def _delete_unwanted_autoscalers(ctx: Context, name: str, namespace: str, spec: SpeechModelSpec) -> None:
    """No autoscaling, or the other engine: its HPA or ScaledObject goes (a 404 is fine: KEDA may not be there)."""
    if manifests.hpa(name, namespace, spec) is None:
        ctx.kube.delete("HorizontalPodAutoscaler", namespace, names.child_name(name))
    if manifests.scaled_object(name, namespace, spec, ctx.settings) is None:
        ctx.kube.delete("ScaledObject", namespace, names.child_name(name))


def refresh_model_status(ctx: Context, namespace: str, model: str, deployment: dict[str, Any]) -> None:
    """A Deployment of ours changed (pods became ready, a rollout stalled): mirror it in the owner's status.

    A model that scales to zero also tells the router when it gains its first ready replica or loses its last."""
    owner = ctx.kube.get("SpeechModel", namespace, model)
    if owner is None or _deleting(owner):
        return
    try:
        spec = parse_model(owner.get("spec"))
    except ValidationError:
        return  # its status says InvalidSpec; leave that
    before = int((owner.get("status") or {}).get("readyReplicas") or 0)
    after = write_model_status(ctx, owner, deployment).readyReplicas
    if spec.autoscaling and spec.autoscaling.scales_to_zero and (before == 0) != (after == 0):
        sync_namespace(ctx, namespace)


def scale_to_zero_pass(ctx: Context, body: dict[str, Any], now: float | None = None) -> int | None:
    """Wake a model at zero that was asked for, or put an idle one to zero (``engine: hpa``; see :mod:`idle`).

    Returns the Deployment's new replica count, None when it was left alone. Idempotent."""
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
    if deployment is None:
        return None
    now = time.time() if now is None else now
    times = idle.Times.of(body, deployment)
    replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
    target = idle.decide(autoscaling, replicas, times, now)
    if target is None:
        if times.active_since is None:
            ctx.kube.patch("Deployment", namespace, names.child_name(name), idle.first_seen_patch(now))
        return None
    log.info("SpeechModel %s/%s: %s", namespace, name, "woken by a request" if target else "idle: scaled to zero")
    deployment = ctx.kube.patch("Deployment", namespace, names.child_name(name), idle.scale_patch(target, now))
    write_model_status(ctx, body, deployment)
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
    if owner is None or _deleting(owner):
        return
    log.info("%s %s/%s was deleted: recreating it", child.get("kind"), namespace, meta.get("name"))
    reconcile_model(ctx, owner)


def _named_models(items: list[dict[str, Any]]) -> tuple[list[NamedModel], set[str]]:
    """Valid models (for the router) and every existing model name (for the routes' check)."""
    valid, existing = [], set()
    for item in items:
        if _deleting(item):
            continue
        name = item["metadata"]["name"]
        existing.add(name)
        try:
            valid.append(NamedModel.model_validate({**(item.get("spec") or {}), "name": name}))
        except ValidationError:
            continue  # its own status says InvalidSpec
    return valid, existing


def _route_state(item: dict[str, Any], existing: set[str], public: set[str]
                 ) -> tuple[NamedRoute | None, list[str], status.Problem | None]:
    name = item["metadata"]["name"]
    try:
        route = NamedRoute.model_validate({**(item.get("spec") or {}), "name": name})
    except ValidationError as exc:
        return None, [], status.Problem("InvalidSpec", validation_message(exc))
    missing = sorted({step.model for step in route.steps if step.model not in existing})
    if name in public:
        return None, missing, status.Problem("NameConflict", f"'{name}' is already a SpeechModel name or alias")
    return route, missing, None


def sync_namespace(ctx: Context, namespace: str) -> None:
    """Rewrite the router's ConfigMap from every SpeechModel and SpeechRoute, and each route's status.

    Serialised per namespace, and always from a fresh listing, so the last writer is right.
    """
    with ctx.namespace_lock(namespace):
        items = ctx.kube.list("SpeechModel", namespace)
        models, existing = _named_models(items)
        ready = {i["metadata"]["name"]: int((i.get("status") or {}).get("readyReplicas") or 0) for i in items}
        public = {n for m in models for n in (m.name, *m.aliases)}
        routes = []
        for item in ctx.kube.list("SpeechRoute", namespace):
            if _deleting(item):
                continue
            route, missing, problem = _route_state(item, existing, public)
            meta = item["metadata"]
            new = status.route_status(missing, item.get("status"), status.now(), meta.get("generation"), problem)
            write_status(ctx, "SpeechRoute", item, new)
            if route is not None and not missing:
                routes.append(route)
        ctx.kube.apply(manifests.router_configmap(namespace, models, routes, ready))


def sync_namespace_or_retry(ctx: Context, namespace: str, retry: int = 0) -> None:
    try:
        sync_namespace(ctx, namespace)
    except KubeError as exc:
        raise _temporary(ctx, retry, f"updating {names.ROUTER_CONFIGMAP} in {namespace} failed", exc) from None
