"""Pure builders: a SpeechModel's spec -> the Kubernetes objects that serve it.

No API calls here: every function takes the model's name, namespace and validated
spec (plus the operator's settings) and returns plain dicts. ``reconcile`` adopts
them (ownerReferences) and applies them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import yaml

from services.core.contracts.crd import API_VERSION
from services.core.contracts.specs import (
    MODELCAR_MOUNT,
    ModelSource,
    NamedModel,
    NamedRoute,
    SpeechModelSpec,
    SpeechRouteSpec,
    Task,
)
from services.core.contracts.wire import RouterModelEntry, RouterModels, RouterRouteEntry

from . import autoscaling, defaults, names, security
from .pulls import PULL
from .settings import OperatorSettings

CONFIG_DIR = "/etc/harmony"
CACHE_DIR = "/var/cache/harmony"
MODEL_FILE = f"{CONFIG_DIR}/{names.MODEL_CONFIG_KEY}"
# Model sources (docs/kubernetes.md, "Model sources and the shared cache"): an hf or url source is fetched into
# the cache by the init container PULL before the model service starts (which then runs offline); an oci source
# (a modelcar) is an image volume mounted at MODELCAR_DIR, and the model file the service reads names that path.
TERMINATION_LOG = "/dev/termination-log"
MODELCAR_VOLUME = "modelcar"
MODELCAR_DIR = MODELCAR_MOUNT
GPU = "nvidia.com/gpu"

# Loading weights can take minutes: the startup probe allows STARTUP_PERIOD_S x STARTUP_FAILURES (15
# min). The rollout's progress deadline outlasts it, plus time to pull the image and pass readiness,
# so a slow but healthy start is never reported as ProgressDeadlineExceeded.
STARTUP_PERIOD_S, STARTUP_FAILURES = 10, 90
PROGRESS_DEADLINE_S = STARTUP_PERIOD_S * STARTUP_FAILURES + 600
# A pod that pulls its weights first (init container ``pull``) may download for long before the startup probe's
# clock starts: its rollout gets this much more before the Deployment calls it stalled. A pull that fails is
# reported at once (PullFailed), not at the deadline.
PULL_ALLOWANCE_S = 3 * 3600

# Draining (docs/kubernetes.md, "Data plane"): at deletion the pod leaves its EndpointSlice while its preStop hook
# sleeps PRE_STOP_S, so kube-proxy and the routers' watches stop sending it requests before SIGTERM; then the
# service refuses new work and waits for its in-flight requests, up to the model's batching.timeout_s plus
# DRAIN_MARGIN_S; the grace period covers both and a margin.
PRE_STOP_S = 10
DRAIN_MARGIN_S = 15

# Fields the model service does not read: changing them must not restart its pods.
_SCALING_FIELDS = {"replicas", "autoscaling", "rollout"}


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def spec_dump(spec: SpeechModelSpec | SpeechRouteSpec, exclude: set[str] | None = None) -> dict[str, Any]:
    """A spec as JSON data: only what differs from the defaults, Kubernetes field names for k8s objects."""
    return spec.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude=exclude)


def pulls(spec: SpeechModelSpec) -> bool:
    """Whether the pods fetch the weights first (init container ``pull``): hf and url sources."""
    return spec.source.kind in ("hf", "url")


def served_spec(spec: SpeechModelSpec) -> SpeechModelSpec:
    """The spec as the model service reads it: an oci source becomes the path its image volume is mounted at
    (sha256 kept), so the service needs no OCI client; every other spec as it is."""
    if spec.source.kind != "oci":
        return spec
    return spec.model_copy(update={"source": ModelSource(path=MODELCAR_DIR, sha256=spec.source.sha256)})


def model_file(name: str, spec: SpeechModelSpec) -> str:
    """The YAML file ``python -m services.service_main --model-file`` (and ``harmony pull``) reads: one NamedModel.

    An oci source is written as the path of its image volume; a comment keeps the image's reference, so a new
    image changes the file (and the pods' spec hash) too."""
    text = yaml.safe_dump({"name": name, **spec_dump(served_spec(spec), _SCALING_FIELDS)}, sort_keys=False)
    if spec.source.kind == "oci":
        text = f"# source.oci {spec.source.oci}: an image volume mounted at {MODELCAR_DIR}\n" + text
    return text


def model_configmap(name: str, namespace: str, spec: SpeechModelSpec) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(names.child_name(name), namespace, names.labels(name)),
            "data": {names.MODEL_CONFIG_KEY: model_file(name, spec)}}


def _resources(spec: SpeechModelSpec, gpu: bool = True) -> dict[str, Any]:
    """The model container's requests and limits (``gpu`` False: without the GPU, for the pull container; a pod's
    request is the larger of its init containers' and the sum of its containers', so this costs nothing more)."""
    r = spec.resources
    requests = defaults.requests(spec)  # the spec's, else derived from the backend (harmony_operator.defaults)
    limits = {k: v for k, v in {"cpu": r.cpu_limit, "memory": r.memory_limit}.items() if v}
    if gpu:
        for resource, count in r.extended().items():  # nvidia.com/gpu, MIG, time-sliced, other vendors
            requests[resource] = limits[resource] = str(count)  # extended resources: request must equal limit
    out: dict[str, Any] = {k: v for k, v in {"requests": requests, "limits": limits}.items() if v}
    if gpu and r.claims:
        out["claims"] = [{"name": c.name} for c in r.claims]  # DRA: the pod's resourceClaims this container uses
    return out


def _taint_key(resource: str) -> str:
    """The taint a node pool of this resource carries: NVIDIA's pools (GKE, AKS, the GPU operator) taint
    nvidia.com/gpu whatever the resource (MIG, time-sliced); another vendor's resource is its own key."""
    return GPU if resource.startswith("nvidia.com/") else resource


def _tolerations(spec: SpeechModelSpec) -> list[dict[str, Any]]:
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations]
    for key in dict.fromkeys(_taint_key(resource) for resource in spec.resources.extended()):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def topology_spread(name: str, spec: SpeechModelSpec) -> list[dict[str, Any]]:
    """The spec's topologySpreadConstraints (one without a labelSelector spreads the model's own pods); none: the
    default spread across zones and nodes (harmony_operator.defaults)."""
    selector = {"matchLabels": names.selector_labels(name)}
    if not spec.topology_spread_constraints:
        return defaults.topology_spread(selector)
    return [{**c.model_dump(by_alias=True, exclude_none=True), "labelSelector":
             c.label_selector or selector} for c in spec.topology_spread_constraints]


def resource_claims(spec: SpeechModelSpec) -> list[dict[str, Any]]:
    """The pod's DRA claims: one ResourceClaim per pod from each named ResourceClaimTemplate."""
    return [{"name": c.name, "resourceClaimTemplateName": c.template} for c in spec.resources.claims]


def _probe(path: str, period: int, failures: int, timeout: int = 3) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def drain_s(spec: SpeechModelSpec) -> int:
    """Seconds the model service waits at SIGTERM for its in-flight requests (``--drain-timeout``): its longest
    request, ``batching.timeout_s``, and a margin."""
    return math.ceil(spec.batching.timeout_s) + DRAIN_MARGIN_S


def termination_grace_s(spec: SpeechModelSpec, settings: OperatorSettings) -> int:
    """The pod's terminationGracePeriodSeconds: the preStop sleep, the drain and a margin (never below the
    operator's ``HARMONY_TERMINATION_GRACE_S``)."""
    return max(settings.termination_grace_s, PRE_STOP_S + drain_s(spec) + DRAIN_MARGIN_S)


def lifecycle() -> dict[str, Any]:
    """The preStop hook: a sleep with the image's own Python (no shell or coreutils needed)."""
    return {"preStop": {"exec": {"command": ["python", "-c", f"import time; time.sleep({PRE_STOP_S})"]}}}


def image_for(spec: SpeechModelSpec, settings: OperatorSettings) -> str:
    if spec.image:
        return spec.image
    return settings.cuda_image if spec.resources.has_accelerator else settings.image


def state_env(spec: SpeechModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The voice service's state lives outside the pod: the database URL from a Secret, the object
    store's place, and its credentials from a Secret. It refuses to start without an object store
    (HARMONY_OBJECT_STORE_REQUIRED) rather than keep voices in the pod's emptyDir."""
    if spec.task != Task.vc:
        return {}
    env: list[dict[str, Any]] = [{"name": "HARMONY_OBJECT_STORE_REQUIRED", "value": "true"}]
    if settings.database_secret:
        env.append({"name": "HARMONY_DATABASE_URL", "valueFrom": {"secretKeyRef": {
            "name": settings.database_secret, "key": settings.database_secret_key}}})
    for variable, value in (("HARMONY_OBJECT_STORE_URL", settings.object_store_url),
                            ("HARMONY_OBJECT_STORE_ENDPOINT_URL", settings.object_store_endpoint_url),
                            ("HARMONY_OBJECT_STORE_REGION", settings.object_store_region)):
        if value:
            env.append({"name": variable, "value": value})
    out: dict[str, Any] = {"env": env}
    if settings.object_store_secret:
        out["envFrom"] = [{"secretRef": {"name": settings.object_store_secret}}]
    return out


def weights_env(spec: SpeechModelSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The model container's variables for its source: offline once the weights are local (hf and url pulled by
    the init container, oci mounted), and the Hub mirror of an hf source."""
    env = [{"name": "HARMONY_OFFLINE", "value": "1"}] if spec.source.remote else []
    return env + hub_env(spec, settings)


def hub_env(spec: SpeechModelSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """``HF_ENDPOINT`` (the operator's ``HARMONY_HF_ENDPOINT``, a Hub mirror) for an hf source."""
    if spec.source.kind == "hf" and settings.hf_endpoint:
        return [{"name": "HF_ENDPOINT", "value": settings.hf_endpoint}]
    return []


def observability_env(settings: OperatorSettings) -> list[dict[str, Any]]:
    """The model service's log format (``HARMONY_LOG_FORMAT``) and OTLP endpoint, as the chart asks
    (docs/operations.md "Logs" and "Traces"); the spec's own ``env`` overrides them."""
    env = [{"name": "HARMONY_LOG_FORMAT", "value": settings.log_format}] if settings.log_format else []
    if settings.otlp_endpoint:
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": settings.otlp_endpoint})
    return env


def container_env(spec: SpeechModelSpec, state: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The operator's variables, the voice service's state, then the spec's own ``env`` (which override).

    ``HARMONY_CPU_REQUEST`` (the CPU request, rounded up, from the downward API) sizes the thread pools
    of a pod without a CPU limit (services/core/runtime/cpus.py); a limit is read from the cgroup."""
    env: list[dict[str, Any]] = [
        {"name": "HARMONY_CACHE_DIR", "value": CACHE_DIR},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if defaults.requests(spec)["cpu"]:
        env.append({"name": "HARMONY_CPU_REQUEST", "valueFrom": {"resourceFieldRef": {
            "containerName": "model", "resource": "requests.cpu", "divisor": "1"}}})
    env += state
    own = [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]
    overridden = {e["name"] for e in own}
    return [e for e in env if e["name"] not in overridden] + own


def _own_cache(spec: SpeechModelSpec) -> bool:
    """The operator's cache volume (none when the spec mounts its own claim at the cache's path)."""
    return not any(v.mount_path.rstrip("/") == CACHE_DIR for v in spec.volumes)


def _cache_mounts(spec: SpeechModelSpec) -> list[dict[str, Any]]:
    """The model file, the cache (the operator's, or the spec's volume at its path) and /tmp."""
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    if _own_cache(spec):
        mounts.append({"name": "cache", "mountPath": CACHE_DIR})
    else:
        mounts += [_mount(v) for v in spec.volumes if v.mount_path.rstrip("/") == CACHE_DIR]
    return mounts + [{"name": "tmp", "mountPath": "/tmp"}]


def _mount(v: Any) -> dict[str, Any]:
    mount = {"name": v.name, "mountPath": v.mount_path, "readOnly": v.read_only}
    return {**mount, "subPath": v.sub_path} if v.sub_path else mount


def volume_mounts(spec: SpeechModelSpec) -> list[dict[str, Any]]:
    """The model file, the cache (or the spec's volume at its path), /tmp, the modelcar of an oci source, then the
    spec's volumes."""
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    if _own_cache(spec):
        mounts.append({"name": "cache", "mountPath": CACHE_DIR})
    mounts.append({"name": "tmp", "mountPath": "/tmp"})
    if spec.source.kind == "oci":
        mounts.append({"name": MODELCAR_VOLUME, "mountPath": MODELCAR_DIR, "readOnly": True})
    for v in spec.volumes:
        mounts.append(_mount(v))
    return mounts


def uses_image_volumes(spec: SpeechModelSpec) -> bool:
    """Whether the pods mount an image volume (an oci source, a volume's ``image``): Kubernetes 1.33+."""
    return spec.source.kind == "oci" or any(v.image for v in spec.volumes)


def cache_volume(settings: OperatorSettings) -> dict[str, Any]:
    """The model cache: the operator's shared claim (``HARMONY_CACHE_CLAIM``), else an emptyDir of the pod."""
    if settings.cache_claim:
        return {"name": "cache", "persistentVolumeClaim": {"claimName": settings.cache_claim}}
    return {"name": "cache", "emptyDir": {"sizeLimit": settings.cache_size_limit}}


def volumes(name: str, spec: SpeechModelSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Weights on a PersistentVolumeClaim or in an OCI image (an image volume), beside the operator's own."""
    out: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": names.child_name(name)}}]
    if _own_cache(spec):
        out.append(cache_volume(settings))
    out.append({"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}})
    if spec.source.kind == "oci":
        out.append({"name": MODELCAR_VOLUME, "image": {"reference": spec.source.oci}})
    for v in spec.volumes:
        if v.claim_name:
            out.append({"name": v.name, "persistentVolumeClaim": {"claimName": v.claim_name,
                                                                  "readOnly": v.read_only}})
        else:
            image = {"reference": v.image, **({"pullPolicy": v.image_pull_policy} if v.image_pull_policy else {})}
            out.append({"name": v.name, "image": image})
    return out


def pull_container(spec: SpeechModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The init container that fetches an hf or url source into the cache (``harmony pull``), so the model
    service starts on local files, offline. Its last progress (revision, bytes) is its termination message,
    which the operator copies into the SpeechModel's ``status.weights``. Only it gets the source's
    credentials Secret; the spec's own ``env`` (proxies, say) applies to it too."""
    env: list[dict[str, Any]] = [{"name": "HARMONY_CACHE_DIR", "value": CACHE_DIR}, {"name": "HOME", "value": "/tmp"},
                                 {"name": "PYTHONUNBUFFERED", "value": "1"}, *hub_env(spec, settings)]
    own = [e.model_dump(by_alias=True, exclude_none=True) for e in spec.env]
    overridden = {e["name"] for e in own}
    container: dict[str, Any] = {
        "name": PULL,
        "image": image_for(spec, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["harmony", "pull"],
        "args": ["--model-file", MODEL_FILE, "--json", "--termination-log", TERMINATION_LOG],
        "env": [e for e in env if e["name"] not in overridden] + own,
        "resources": _resources(spec, gpu=False),
        "securityContext": security.container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": _cache_mounts(spec),
    }
    if spec.source.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": spec.source.credentials_secret}}]
    return container


def pull_secrets(spec: SpeechModelSpec, settings: OperatorSettings) -> list[dict[str, str]]:
    """The pod's imagePullSecrets: the operator's, and the credentials Secret of an oci source (a
    kubernetes.io/dockerconfigjson Secret: the kubelet pulls the modelcar)."""
    secrets = list(settings.image_pull_secrets)
    if spec.source.kind == "oci" and spec.source.credentials_secret and \
            spec.source.credentials_secret not in secrets:
        secrets.append(spec.source.credentials_secret)
    return [{"name": s} for s in secrets]


def pod_spec(name: str, spec: SpeechModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    state = state_env(spec, settings)
    container = {
        "name": "model",
        "image": image_for(spec, settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["python", "-m", "services.service_main"],
        "args": ["--model-file", f"{CONFIG_DIR}/{names.MODEL_CONFIG_KEY}", "--port", str(names.SERVICE_PORT),
                 "--drain-timeout", str(drain_s(spec))],
        "ports": [{"name": "http", "containerPort": names.SERVICE_PORT, "protocol": "TCP"}],
        "env": container_env(spec, weights_env(spec, settings) + observability_env(settings) + state.get("env", [])),
        **({"envFrom": state["envFrom"]} if "envFrom" in state else {}),
        "resources": _resources(spec),
        # Loading weights can take minutes: the startup probe allows 15, then liveness takes over.
        "startupProbe": _probe("/healthz", STARTUP_PERIOD_S, STARTUP_FAILURES),
        "livenessProbe": _probe("/healthz", 15, 4, timeout=5),
        "readinessProbe": _probe("/readyz", 5, 3),
        "lifecycle": lifecycle(),
        "securityContext": security.container_security_context(),
        "volumeMounts": volume_mounts(spec),
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_s(spec, settings),
        "securityContext": security.pod_security_context(settings),
        "containers": [container],
        "volumes": volumes(name, spec, settings),
    }
    optional = {
        "initContainers": [pull_container(spec, settings)] if pulls(spec) else None,
        "serviceAccountName": pod_service_account(name, spec, settings),
        "imagePullSecrets": pull_secrets(spec, settings) or None,
        "nodeSelector": dict(spec.node_selector) or None,
        "tolerations": _tolerations(spec) or None,
        "affinity": spec.affinity or None,
        "runtimeClassName": spec.runtime_class_name,
        "priorityClassName": spec.priority_class_name,
        "topologySpreadConstraints": topology_spread(name, spec) or None,
        "resourceClaims": resource_claims(spec) or None,
    }
    pod.update({k: v for k, v in optional.items() if v is not None})
    return pod


def config_hash(name: str, spec: SpeechModelSpec) -> str:
    return hashlib.sha256(model_file(name, spec).encode()).hexdigest()[:16]


def deployment(name: str, namespace: str, spec: SpeechModelSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The model service. With autoscaling, ``replicas`` is left to the HPA (set once, at creation)."""
    labels = names.labels(name)
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(names.child_name(name), namespace, labels),
        "spec": {
            "replicas": max(1, spec.autoscaling.min_replicas) if spec.autoscaling else spec.replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": PROGRESS_DEADLINE_S + (PULL_ALLOWANCE_S if pulls(spec) else 0),
            "selector": {"matchLabels": names.selector_labels(name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": spec.rollout.max_surge,
                                                                    "maxUnavailable": spec.rollout.max_unavailable}},
            "template": {
                "metadata": {
                    "labels": labels,
                    # A changed model file rolls the pods (a mounted ConfigMap alone would not restart them).
                    "annotations": {names.SPEC_HASH: config_hash(name, spec),
                                    "prometheus.io/scrape": "true", "prometheus.io/path": "/metrics",
                                    "prometheus.io/port": str(names.SERVICE_PORT)},
                },
                "spec": pod_spec(name, spec, settings),
            },
        },
    }
    return body


def service(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(names.child_name(name), namespace, names.labels(name)),
            "spec": {"type": "ClusterIP", "selector": names.selector_labels(name),
                     "ports": [{"name": "http", "port": names.SERVICE_PORT, "targetPort": "http",
                                "protocol": "TCP"}]}}


quantity = autoscaling.quantity


def hpa_metrics(spec: SpeechModelSpec) -> list[dict[str, Any]]:
    """CPU utilization by default; the per-pod ``harmony_in_flight_requests`` and/or ``harmony_queue_depth`` when
    their targets are set (through a custom-metrics adapter, e.g. prometheus-adapter: the chart ships its rule);
    CPU stays beside them only when set explicitly."""
    assert spec.autoscaling is not None
    return autoscaling.hpa_metrics(spec.autoscaling, defaults.in_flight_target(spec))


def hpa(name: str, namespace: str, spec: SpeechModelSpec) -> dict[str, Any] | None:
    """The HPA of ``engine: hpa`` (None without autoscaling, or with KEDA, whose ScaledObject makes its own)."""
    a = spec.autoscaling
    if a is None or a.engine != "hpa":
        return None
    body: dict[str, Any] = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(names.child_name(name), namespace, names.labels(name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": names.child_name(name)},
            # 0 needs the HPAScaleToZero feature gate, which most clusters lack: 1 is the floor, and the operator
            # moves the Deployment between 0 and 1 itself (harmony_operator.idle); the HPA leaves 0 alone.
            "minReplicas": max(1, a.min_replicas),
            "maxReplicas": max(a.max_replicas, 1),
            "behavior": autoscaling.behavior(a),
        },
    }
    metrics = hpa_metrics(spec)
    if metrics:
        body["spec"]["metrics"] = metrics
    return body


def scaled_object(name: str, namespace: str, spec: SpeechModelSpec,
                  settings: OperatorSettings) -> dict[str, Any] | None:
    """The KEDA ScaledObject of ``engine: keda`` (None otherwise)."""
    a = spec.autoscaling
    if a is None or a.engine != "keda":
        return None
    return autoscaling.scaled_object(name, namespace, a, names.labels(name), settings.prometheus_url,
                                     defaults.in_flight_target(spec))


def pdb(name: str, namespace: str) -> dict[str, Any]:
    """At most one pod of a model goes at a time in a node drain (made only for two replicas or more)."""
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(names.child_name(name), namespace, names.labels(name)),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector_labels(name)}}}


def service_account_name(name: str, spec: SpeechModelSpec) -> str | None:
    """The name of the ServiceAccount the operator creates for the model (None: it creates none)."""
    return None if spec.service_account is None else spec.service_account.name or names.child_name(name)


def pod_service_account(name: str, spec: SpeechModelSpec, settings: OperatorSettings) -> str | None:
    """The model pods' ServiceAccount: the one created for them, an existing one the spec names, the operator's
    default (HARMONY_MODEL_SERVICE_ACCOUNT), or the namespace's default (None)."""
    return service_account_name(name, spec) or spec.service_account_name or settings.service_account or None


def service_account(name: str, namespace: str, spec: SpeechModelSpec) -> dict[str, Any] | None:
    """spec.service_account: the model pods' own ServiceAccount, its annotations for cloud credentials (IRSA, GKE
    or Azure workload identity). No token mounted by default (the pods never call the API; those webhooks project
    their own token)."""
    account = service_account_name(name, spec)
    if spec.service_account is None or account is None:
        return None
    meta = _meta(account, namespace, names.labels(name))
    if spec.service_account.annotations:
        meta["annotations"] = dict(spec.service_account.annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False}


def model_children(name: str, namespace: str, spec: SpeechModelSpec,
                   settings: OperatorSettings) -> list[dict[str, Any]]:
    """Everything a SpeechModel owns, in the order to apply it (config and account before the pods that use them)."""
    account = service_account(name, namespace, spec)
    children = [model_configmap(name, namespace, spec), *([account] if account else []), service(name, namespace),
                deployment(name, namespace, spec, settings)]
    if defaults.wants_pdb(spec):
        children.append(pdb(name, namespace))
    for autoscaler in (hpa(name, namespace, spec), scaled_object(name, namespace, spec, settings)):
        if autoscaler:
            children.append(autoscaler)
    return children


def router_config(namespace: str, models: list[NamedModel], routes: list[NamedRoute],
                  ready: dict[str, int] | None = None) -> str:
    """The router's models file (:class:`RouterModels`): every model with its endpoint (and, for one that scales
    to zero, its ready replicas from ``ready``), and every route."""
    ready = ready or {}
    table = RouterModels(
        models=[RouterModelEntry(name=m.name, endpoint=names.endpoint(m.name, namespace),
                                 spec=SpeechModelSpec.model_validate(m.model_dump(exclude={"name"})),
                                 ready_replicas=ready.get(m.name) if m.autoscaling and m.autoscaling.scales_to_zero
                                 else None)
                for m in models],
        routes=[RouterRouteEntry(name=r.name, spec=SpeechRouteSpec.model_validate(r.model_dump(exclude={"name"})))
                for r in routes])
    return table.to_yaml()


def router_configmap(namespace: str, models: list[NamedModel], routes: list[NamedRoute],
                     ready: dict[str, int] | None = None,
                     owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The namespace's model table; ``owners`` (:func:`table_owners`) become its ownerReferences."""
    labels = {"app.kubernetes.io/name": "harmony-router", "app.kubernetes.io/component": "router-config",
              "app.kubernetes.io/part-of": "harmony", names.MANAGED_BY: names.OPERATOR}
    meta = _meta(names.ROUTER_CONFIGMAP, namespace, labels)
    if owners:
        meta["ownerReferences"] = owners
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {names.ROUTER_CONFIG_KEY: router_config(namespace, models, routes, ready)}}


def table_owners(models: list[dict[str, Any]], routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every SpeechModel and SpeechRoute of the namespace (those being deleted too) owns its model table, so
    Kubernetes' garbage collector deletes the table with the last of them, whether or not the operator still runs
    (``helm uninstall``). Not controllers, and no blockOwnerDeletion: nothing waits for the table."""
    return [{"apiVersion": API_VERSION, "kind": kind, "name": item["metadata"]["name"],
             "uid": item["metadata"]["uid"]}
            for kind, items in (("SpeechModel", models), ("SpeechRoute", routes))
            for item in sorted(items, key=lambda i: i["metadata"]["name"]) if item["metadata"].get("uid")]
