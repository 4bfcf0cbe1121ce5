"""Watch EndpointSlices through the Kubernetes API (one namespace's, or every namespace's), and report them.

The list-and-watch loop is :class:`services.router.cluster.api_watch.ApiWatch`'s; this turns its objects into
:class:`EndpointSlice` s (those of a Service only: label ``kubernetes.io/service-name``). ``on_reset`` gets every
list, ``on_event`` every change between lists (:class:`services.router.cluster.pods.PodDirectory` takes both; a
watch of one namespace passes it ``namespace``, so a list replaces that namespace's slices only).

RBAC: ``get, list, watch`` on ``endpointslices`` (API group ``discovery.k8s.io``) in each namespace it watches
(a Role per namespace), or cluster-wide (a ClusterRole) for ``namespace=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.router.cluster import api_watch
from services.router.cluster.api_watch import ApiWatch, collection
from services.router.cluster.endpoint_slices import SERVICE_NAME_LABEL, EndpointSlice, SliceEvent

OnReset = Callable[[list[EndpointSlice]], None]
OnEvent = Callable[[SliceEvent], None]


def slices_path(namespace: str | None) -> str:
    return collection("/apis/discovery.k8s.io/v1", "endpointslices", namespace)


def _of_a_service(obj: dict[str, Any]) -> bool:
    return SERVICE_NAME_LABEL in ((obj.get("metadata") or {}).get("labels") or {})


class SliceWatch(ApiWatch):
    what = "EndpointSlice"

    def __init__(self, client: httpx.AsyncClient, namespace: str | None, on_reset: OnReset, on_event: OnEvent,
                 token_file: Path | None = None) -> None:
        self.namespace = namespace

        def items(objs: list[dict[str, Any]]) -> None:
            on_reset([EndpointSlice.model_validate(obj) for obj in objs if _of_a_service(obj)])

        def change(kind: str, obj: dict[str, Any]) -> None:
            if _of_a_service(obj):
                on_event(SliceEvent.model_validate({"type": kind, "object": obj}))

        super().__init__(client, slices_path(namespace), items, change, {"labelSelector": SERVICE_NAME_LABEL},
                         token_file)

    @classmethod
    def in_cluster(cls, on_reset: OnReset, on_event: OnEvent, namespace: str | None = None) -> SliceWatch:
        """With the pod's service account (its token and CA); ``namespace`` None: every namespace."""
        return cls(api_watch.in_cluster_client(), namespace, on_reset, on_event, api_watch.SERVICE_ACCOUNT / "token")
