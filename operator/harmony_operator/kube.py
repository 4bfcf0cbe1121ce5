"""The few Kubernetes API calls the operator makes, on plain dicts.

Authentication and transport come from the official client (in-cluster service
account, or a kubeconfig); the calls themselves are generic REST on the paths below,
so the manifests stay plain dicts from :mod:`harmony_operator.manifests`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .names import API_VERSION, MODELS, ROUTES
from .ownership import describe, managed

# kind -> (API prefix, plural); every kind the operator touches is namespaced.
RESOURCES: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Pod": ("/api/v1", "pods"),  # read only: the model pods' pull init containers and their logs (status.weights)
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),  # spec.service_account: the model pods' own
    "Deployment": ("/apis/apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ScaledObject": ("/apis/keda.sh/v1alpha1", "scaledobjects"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),  # read only: the router's demand Leases (idle.py)
    "SpeechModel": (f"/apis/{API_VERSION}", MODELS),
    "SpeechRoute": (f"/apis/{API_VERSION}", ROUTES),
}

MERGE_PATCH = "application/merge-patch+json"
FIELD_MANAGER = "harmony-operator"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class NotOwned(KubeError):
    """An object is there under the name, but it is not the operator's: it was left untouched."""

    def __init__(self, obj: dict[str, Any]) -> None:
        super().__init__(409, f"{describe(obj)} already exists and is not ours: left untouched")
        self.obj = obj


Owns = Callable[[dict[str, Any]], bool]
_UNKNOWN: dict[str, Any] = {}


def path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    prefix, plural = RESOURCES[kind]
    out = f"{prefix}/namespaces/{namespace}/{plural}"
    if name:
        out += f"/{name}"
    if subresource:
        out += f"/{subresource}"
    return out


def merge_patch(previous: dict[str, Any] | None, desired: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns what ``previous`` set into ``desired``.

    It carries all of ``desired`` (so fields someone else changed are put back) plus
    ``None`` for every key that ``previous`` set and ``desired`` no longer does (a
    removed nodeSelector entry, a dropped affinity). Lists are replaced as a whole.
    """
    patch = dict(desired)
    for key, old in (previous or {}).items():
        if key not in desired:
            patch[key] = None
        elif isinstance(old, dict) and isinstance(desired[key], dict):
            patch[key] = merge_patch(old, desired[key])
    return patch


@dataclass
class Kube:
    """A thin REST client: create-or-patch, get, list, delete, patch status."""

    api: Any  # kubernetes.client.ApiClient

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: its service account. Elsewhere: ``$KUBECONFIG`` (read now, not at import) or ~/.kube/config."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            kubeconfig = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self.api.close()

    def _call(self, method: str, url_path: str, body: Any = None, content_type: str = "application/json",
              query: list[tuple[str, str]] | None = None, accept: str = "application/json") -> bytes:
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = content_type
        method, url, headers, body, _ = self.api.param_serialize(
            method=method, resource_path=url_path, query_params=query or [], header_params=headers, body=body,
            auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=(5, 30))
        data = response.read()
        if response.status >= 400:
            try:
                message = json.loads(data).get("message", "")
            except (ValueError, AttributeError):
                message = data[:300].decode(errors="replace") if data else ""
            raise KubeError(response.status, message or response.reason or "")
        return data

    def request(self, method: str, url_path: str, body: Any = None, content_type: str = "application/json",
                query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        data = self._call(method, url_path, body, content_type, query)
        return json.loads(data) if data else {}

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int) -> str:
        """The last ``tail_lines`` lines of a container's log (``pods/log``, as ``kubectl logs --tail``)."""
        data = self._call("GET", path("Pod", namespace, name, "log"), accept="text/plain, */*",
                          query=[("container", container), ("tailLines", str(tail_lines))])
        return data.decode(errors="replace")

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        """The objects of ``kind`` in ``namespace`` (``selector``: a label selector, e.g. ``a=b,c=d``)."""
        query = [("labelSelector", selector)] if selector else None
        return self.request("GET", path(kind, namespace), query=query).get("items", [])

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("POST", path(obj["kind"], meta["namespace"]), obj,
                            query=[("fieldManager", FIELD_MANAGER)])

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any],
              subresource: str | None = None) -> dict[str, Any]:
        return self.request("PATCH", path(kind, namespace, name, subresource), patch, MERGE_PATCH,
                            query=[("fieldManager", FIELD_MANAGER)])

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request("DELETE", path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def apply(self, obj: dict[str, Any], previous: dict[str, Any] | None = None,
              patch_body: dict[str, Any] | None = None, owns: Owns = managed,
              existing: dict[str, Any] | None = _UNKNOWN) -> dict[str, Any]:
        """Create ``obj``; if it exists and ``owns`` it, patch it into ``patch_body`` (default ``obj``).

        ``previous``, what the last apply wanted, turns fields dropped since into removals.
        ``existing`` (when the caller has just read it; None: not there) saves a request. An
        object that is not ours (by default: not labelled managed-by harmony-operator) raises
        :class:`NotOwned` and is neither patched nor adopted.
        """
        meta = obj["metadata"]
        if existing is _UNKNOWN or existing is None:
            try:
                return self.create(obj)
            except KubeError as exc:
                if exc.status != 409:
                    raise
            existing = self.get(obj["kind"], meta["namespace"], meta["name"])
            if existing is None:
                raise KubeError(409, f"{obj['kind']} {meta['name']} was deleted while being created")
        if not owns(existing):
            raise NotOwned(existing)
        return self.patch(obj["kind"], meta["namespace"], meta["name"], merge_patch(previous, patch_body or obj))

    def delete_owned(self, kind: str, namespace: str, name: str, owns: Owns = managed) -> bool:
        """Delete the object if it is there and ours; a foreign one is left alone (False)."""
        found = self.get(kind, namespace, name)
        if found is None or not owns(found):
            return False
        return self.delete(kind, namespace, name)
