"""The kopf handlers: thin, each one calls :mod:`harmony_operator.reconcile`.

    kopf run --standalone -m harmony_operator.handlers --namespace harmony   # or -A

- Several replicas (HARMONY_LEADER_ELECTION): only the holder of the Lease ``harmony-operator`` acts
  (leader.py); a standby waits in the startup handler, so its kopf watches and writes nothing.

- SpeechModel created, resumed, updated, or the periodic pass (resync.py): apply its ConfigMap,
  Service, Deployment, PodDisruptionBudget and HorizontalPodAutoscaler (create, or
  patch on 409), write its status, rewrite the router's ConfigMap.
- SpeechModel deleted: Kubernetes garbage-collects its children (ownerReferences);
  the router's ConfigMap forgets it. No finalizer unless HARMONY_FINALIZERS is on (then
  the finalizer deletes the children itself), so uninstalling never hangs.
- A SpeechModel with ``min_replicas: 0`` (engine hpa): woken when the router renews its demand
  Lease (``harmony-demand-<model>``, label ``harmony.dev/demand``: an event handler on Leases,
  watched with that label as a server-side selector), put to zero after ``scale_to_zero_after``
  without requests and with no pod starting (checked by the periodic pass every
  ``scale_check_interval_s``; no kopf timer, which would put a finalizer on the model).
- SpeechRoute created, updated, deleted, or the periodic pass: check its steps' models (there,
  of the step's task, Ready), write its status, rewrite the router's ConfigMap.
- A child deleted by someone: recreated. A child edited by someone: repaired at that
  event. A Deployment changed: the owner's status follows (ready replicas, rollouts).
- A model pod with the init container ``pull`` (hf and url sources) changed: the owner's status
  follows (Downloading, PullFailed, status.weights). Pods are watched with a server-side label
  selector (the model pods' own labels), read only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from . import idle, leader, manifests, names, reconcile
from .kube import Kube
from .resync import Resync
from .settings import OperatorSettings

MODEL = (names.GROUP, names.VERSION, names.MODELS)
ROUTE = (names.GROUP, names.VERSION, names.ROUTES)
MANAGED = {names.MANAGED_BY: names.OPERATOR}
POD = ("", "v1", "pods")
LEASE = ("coordination.k8s.io", "v1", "leases")
DEMAND = {idle.DEMAND: "true"}
MODEL_PODS = {"app.kubernetes.io/name": "harmony-model", names.MANAGED_BY: names.OPERATOR}
CHILDREN = [("", "v1", "configmaps"), ("", "v1", "services"), ("apps", "v1", "deployments"),
            ("autoscaling", "v2", "horizontalpodautoscalers"), ("policy", "v1", "poddisruptionbudgets")]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account, else ``$KUBECONFIG`` (read at login, not at import)."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Progress and diff-base in our own annotations: the status schema stays strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=names.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=names.GROUP, key="last-handled-configuration",
        # The old router report of a model's last request (before demand Leases) is no change to handle.
        ignored_fields=[("metadata", "annotations", idle.LAST_REQUEST)])
    settings.persistence.finalizer = f"{names.GROUP}/finalizer"
    # No watching of CRDs (cluster-scoped, beyond the chart's namespaced RBAC): the CRDs are
    # installed before the operator starts, and API discovery at start-up finds them.
    settings.scanning.disabled = True
    # Only the model pods reach the operator (a server-side filter): not every pod of the namespaces.
    settings.watching.label_selectors[POD] = ",".join(f"{k}={v}" for k, v in MODEL_PODS.items())
    settings.watching.label_selectors[LEASE] = f"{idle.DEMAND}=true"  # only the router's demand Leases
    settings.posting.level = logging.WARNING
    memo.ctx = reconcile.Context(Kube.from_environment(), OperatorSettings.from_env())
    memo.elector = None
    if memo.ctx.settings.leader_election:  # a standby waits here: kopf watches nothing until this returns
        memo.elector = await _lead(memo.ctx)
    memo.resync = Resync(memo.ctx, memo.ctx.settings.reconcile_interval_s,
                         memo.ctx.settings.scale_check_interval_s, memo.ctx.settings.pull_progress_interval_s,
                         active=memo.elector.leading if memo.elector else None)
    memo.resync.start()


async def _lead(ctx: reconcile.Context) -> leader.Elector:
    """Stand by (serving the liveness endpoint) until this replica holds the operator's Lease."""
    s = ctx.settings
    elector = leader.Elector(ctx.kube, leader.own_namespace(s.pod_namespace), leader.identity(s.pod_name),
                             leader.Timing(s.leader_lease_s, s.leader_renew_deadline_s, s.leader_retry_s))
    health = leader.StandbyHealth(s.standby_health_port, elector.alive) if s.standby_health_port else None
    elector.start()
    if health is not None:
        health.start()
    logging.getLogger("harmony.operator").info("leader election: %s stands by for %s/%s", elector.me,
                                               elector.namespace, elector.name)
    try:
        await elector.wait_leading()
    except asyncio.CancelledError:  # stopped while standing by
        elector.stop(release=False)
        raise
    finally:
        if health is not None:
            health.close()
    return elector


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.stop()
    if memo.elector is not None:  # a standby takes over at its next read, not after the Lease's duration
        memo.elector.stop(release=True)
    memo.ctx.kube.close()


def _namespace(body: kopf.Body) -> str:
    return body["metadata"]["namespace"]


@kopf.on.create(*MODEL)
@kopf.on.resume(*MODEL)
def model_created(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    try:
        reconcile.reconcile_model(memo.ctx, dict(body), retry=retry)
    finally:  # a model with a conflict or an invalid spec leaves the router too
        reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


@kopf.on.update(*MODEL)
def model_updated(body: kopf.Body, old: Any, memo: kopf.Memo, retry: int, **_: Any) -> None:
    try:
        reconcile.reconcile_model(memo.ctx, dict(body), (old or {}).get("spec"), retry=retry)
    finally:
        reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


def _finalizers_on(memo: kopf.Memo, **_: Any) -> bool:
    return bool(memo.ctx.settings.finalizers)


@kopf.on.delete(*MODEL, when=_finalizers_on)
def model_finalize(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    reconcile.finalize_model(memo.ctx, dict(body), retry)


@kopf.on.event(*MODEL)
@kopf.on.event(*ROUTE)
def seen(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Its namespace joins the periodic pass. Without a finalizer, a deleted object is just gone:
    the router's ConfigMap forgets it."""
    memo.resync.namespaces.add(_namespace(body))
    if type == "DELETED":
        reconcile.sync_namespace(memo.ctx, _namespace(body))


@kopf.on.event(*LEASE, labels=DEMAND)
def model_asked_for(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The router renewed a model's demand Lease: a model at zero wakes now, not at the next check.
    (The router never writes the SpeechModel; the idle check runs in the periodic pass.)"""
    model = idle.lease_model(body["metadata"]["name"])
    if type == "DELETED" or model is None:
        return
    found = memo.ctx.kube.get("SpeechModel", _namespace(body), model)
    if found is not None and idle.wants_zero(found.get("spec")):
        reconcile.scale_to_zero_pass(memo.ctx, found, lease=dict(body))


@kopf.on.delete(*ROUTE, when=_finalizers_on, id="route_finalize")
@kopf.on.create(*ROUTE)
@kopf.on.resume(*ROUTE)
@kopf.on.update(*ROUTE)
def route_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    reconcile.sync_namespace_or_retry(memo.ctx, _namespace(body), retry)


def child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        reconcile.on_child_gone(memo.ctx, _namespace(body), dict(body))
    else:
        reconcile.on_child_event(memo.ctx, _namespace(body), dict(body))


for _group, _version, _plural in CHILDREN:
    kopf.on.event(_group, _version, _plural, labels=MANAGED, id=f"child-{_plural}")(child_event)


def _pulls(spec: kopf.Spec, **_: Any) -> bool:
    return any(c.get("name") == manifests.PULL for c in spec.get("initContainers") or [])


@kopf.on.event(*POD, labels=MODEL_PODS, when=_pulls)
def model_pod_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A model pod's init container ``pull`` started, finished or failed: its SpeechModel's status follows."""
    reconcile.on_pod_event(memo.ctx, _namespace(body), dict(body))
