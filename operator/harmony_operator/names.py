"""Names and labels of what the operator owns, derived from a SpeechModel's name."""

from __future__ import annotations

import hashlib
import re

GROUP = "harmony.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
MODELS = "speechmodels"
ROUTES = "speechroutes"

MANAGED_BY = "app.kubernetes.io/managed-by"
OPERATOR = "harmony-operator"
MODEL_LABEL = "harmony.dev/model"
SPEC_HASH = "harmony.dev/spec-hash"
ROUTER_CONFIGMAP = "harmony-router-models"
ROUTER_CONFIG_KEY = "models.yaml"
MODEL_CONFIG_KEY = "model.yaml"
SERVICE_PORT = 8080

_DNS1035_MAX = 63

# Model names whose children would take the name of something the chart (release ``harmony``) or
# the operator itself makes: ``harmony-router`` (router Service, Deployment, PDB),
# ``harmony-operator``, ``harmony-router-models`` (the router's ConfigMap).
RESERVED_MODEL_NAMES = frozenset({"router", "operator", "router-models"})


def reserved(model: str) -> str | None:
    """Why ``model`` may not be a SpeechModel name (None: it may)."""
    if model in RESERVED_MODEL_NAMES or child_name(model) == ROUTER_CONFIGMAP:
        return (f"the name '{model}' is reserved: its objects would be named {child_name(model)}, "
                "a name the Helm chart or the operator uses")
    return None


def child_name(model: str) -> str:
    """DNS-1035 name of the Deployment, Service, ConfigMap, HPA and PDB of a model.

    ``whisper-base`` -> ``harmony-whisper-base``. A name with dots, or one too long, gets a
    short hash of the original so that ``a.b`` and ``a-b`` never share children.
    """
    base = "harmony-" + model.replace(".", "-")
    if base == "harmony-" + model and len(base) <= _DNS1035_MAX:
        return base
    digest = hashlib.sha256(model.encode()).hexdigest()[:6]
    base = re.sub(r"-+$", "", base[:_DNS1035_MAX - len(digest) - 1])
    return f"{base}-{digest}"


def selector_labels(model: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "harmony-model", MODEL_LABEL: model}


def labels(model: str) -> dict[str, str]:
    return {**selector_labels(model), "app.kubernetes.io/instance": child_name(model),
            "app.kubernetes.io/component": "model-service", "app.kubernetes.io/part-of": "harmony",
            MANAGED_BY: OPERATOR}


def selector_string(model: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(model).items())


def endpoint(model: str, namespace: str) -> str:
    return f"http://{child_name(model)}.{namespace}.svc.cluster.local:{SERVICE_PORT}"
