"""The kopf handlers: thin, each one calls :mod:`harmony_operator.reconcile`.

    kopf run --standalone -m harmony_operator.handlers --namespace harmony   # or -A

- SpeechModel created, resumed, updated, or a timer tick: apply its ConfigMap,
  Service, Deployment, PodDisruptionBudget and HorizontalPodAutoscaler (create, or
  patch on 409), write its status, rewrite the router's ConfigMap.
- SpeechModel deleted: Kubernetes garbage-collects its children (ownerReferences);
  the router's ConfigMap forgets it.
- A SpeechModel with ``min_replicas: 0``: woken when the router writes its last-request
  annotation, put to zero after ``scale_to_zero_after`` without requests (a timer).
- SpeechRoute created, updated, deleted, or a timer tick: check its steps' models,
  write its status, rewrite the router's ConfigMap.
- A child deleted by someone: recreated. A Deployment changed: the owner's status
  follows (ready replicas, stalled rollouts).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf
from . import idle, names, reconcile
from .kube import Kube
from .settings import OperatorSettings

_INTERVAL = OperatorSettings.from_env().reconcile_interval_s
_SCALE_CHECK = OperatorSettings.from_env().scale_check_interval_s
MODEL = (names.GROUP, names.VERSION, names.MODELS)
ROUTE = (names.GROUP, names.VERSION, names.ROUTES)
MANAGED = {names.MANAGED_BY: names.OPERATOR}
CHILDREN = [("", "v1", "configmaps"), ("", "v1", "services"), ("apps", "v1", "deployments"),
            ("autoscaling", "v2", "horizontalpodautoscalers"), ("policy", "v1", "poddisruptionbudgets")]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else ``$KUBECONFIG`` (read at login, not at import)."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress and diff-base in our own annotations: the status schema stays strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration",
        # The router's report of a model's last request is no change to handle (see model_asked_for).
        ignored_fields=[("metadata", "annotations", idle.LAST_REQUEST)])
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    # No watching of CRDs (cluster-scoped, beyond the chart's namespaced RBAC): the CRDs are
    # installed before the operator starts, and API discovery at start-up finds them.
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    memo.ctx = reconcile.Context(Kube.from_environment(), OperatorSettings.from_env())


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.ctx.kube.close()


def _namespace(body: kopf.Body) -> str:
    return body["metadata"]["namespace"]


@kopf.on.create(*MODEL)
@kopf.on.resume(*MODEL)
def model_created(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    reconcile.reconcile_model(memo.ctx, dict(body), retry=retry)
    reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


@kopf.on.update(*MODEL)
def model_updated(body: kopf.Body, old: Any, memo: kopf.Memo, retry: int, **_: Any) -> None:
    reconcile.reconcile_model(memo.ctx, dict(body), (old or {}).get("spec"), retry=retry)
    reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


@kopf.on.delete(*MODEL)
def model_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


@kopf.timer(*MODEL, interval=_INTERVAL, initial_delay=_INTERVAL)
def model_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile.reconcile_model(memo.ctx, dict(body))


def _scales_to_zero(spec: kopf.Spec, **_: Any) -> bool:
    autoscaling = spec.get("autoscaling") or {}
    return autoscaling.get("min_replicas") == 0 and autoscaling.get("engine", "hpa") == "hpa"


def _asked_for(spec: kopf.Spec, annotations: kopf.Annotations, **_: Any) -> bool:
    return _scales_to_zero(spec) and idle.LAST_REQUEST in annotations


@kopf.timer(*MODEL, interval=_SCALE_CHECK, initial_delay=_SCALE_CHECK, when=_scales_to_zero)
def model_idle_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A model that scales to zero: back to zero after scale_to_zero_after without requests."""
    reconcile.scale_to_zero_pass(memo.ctx, dict(body))


@kopf.on.event(*MODEL, when=_asked_for)
def model_asked_for(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The router wrote harmony.dev/last-request: a model at zero wakes now, not at the next tick."""
    if type != "DELETED":
        reconcile.scale_to_zero_pass(memo.ctx, dict(body))


@kopf.on.create(*ROUTE)
@kopf.on.resume(*ROUTE)
@kopf.on.update(*ROUTE)
@kopf.on.delete(*ROUTE)
def route_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


@kopf.timer(*ROUTE, interval=_INTERVAL, initial_delay=_INTERVAL)
def route_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    reconcile.sync_namespace(memo.ctx, _namespace(body))


def child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        reconcile.on_child_gone(memo.ctx, _namespace(body), dict(body))
    elif body.get("kind") == "Deployment" and names.MODEL_LABEL in body["metadata"].get("labels", {}):
        reconcile.refresh_model_status(memo.ctx, _namespace(body), body["metadata"]["labels"][names.MODEL_LABEL],
                                       dict(body))


for _group, _version, _plural in CHILDREN:
    kopf.on.event(_group, _version, _plural, labels=MANAGED, id=f"child-{_plural}")(child_event)
