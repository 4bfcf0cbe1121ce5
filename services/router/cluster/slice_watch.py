"""Watch the EndpointSlices of the router's namespace through the Kubernetes API, and report them.

List, then watch from the list's ``resourceVersion`` (with bookmarks, so a quiet watch resumes where it
was); when the watch ends it is opened again from the last version seen, and when that version has expired
(410 Gone) the slices are listed again. Any other failure is logged and retried after a back-off (1 s,
doubling up to 30 s): the watch never stops while the router runs, and the router keeps serving with the
pods it knew meanwhile. ``on_reset`` gets every list, ``on_event`` every change between lists
(:class:`services.router.cluster.pods.PodDirectory` takes both).

RBAC: ``get, list, watch`` on ``endpointslices`` (API group ``discovery.k8s.io``) in the router's namespace,
with the pod's service account token (re-read for every request: projected tokens rotate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from services.router.cluster.endpoint_slices import SERVICE_NAME_LABEL, EndpointSlice, SliceEvent
from services.router.cluster.wake import SERVICE_ACCOUNT

log = logging.getLogger("harmony.router.slices")

SLICES = "/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
WATCH_TIMEOUT_S = 300  # the API server ends a watch after this; it is opened again from where it was
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 30.0

OnReset = Callable[[list[EndpointSlice]], None]
OnEvent = Callable[[SliceEvent], None]


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class SliceWatch:
    def __init__(self, client: httpx.AsyncClient, namespace: str, on_reset: OnReset, on_event: OnEvent,
                 token_file: Path | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.on_reset = on_reset
        self.on_event = on_event
        self.token_file = token_file
        self.path = SLICES.format(namespace=namespace)

    @classmethod
    def in_cluster(cls, on_reset: OnReset, on_event: OnEvent, namespace: str | None = None) -> SliceWatch:
        """With the pod's service account (its token, CA and namespace)."""
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        namespace = namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        verify = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        # no read timeout: a watch is quiet while nothing changes (the server ends it after WATCH_TIMEOUT_S)
        client = httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=verify,
                                   timeout=httpx.Timeout(10.0, read=WATCH_TIMEOUT_S + 30))
        return cls(client, namespace, on_reset, on_event, SERVICE_ACCOUNT / "token")

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    async def list_once(self) -> str:
        """List the slices, report them all; the list's resourceVersion."""
        response = await self.client.get(self.path, params={"labelSelector": SERVICE_NAME_LABEL},
                                         headers=self._headers())
        response.raise_for_status()
        body = response.json()
        self.on_reset([EndpointSlice.model_validate(item) for item in body.get("items") or []])
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    async def watch_once(self, version: str) -> str:
        """Watch from ``version`` until the server ends the watch; the last resourceVersion seen."""
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "labelSelector": SERVICE_NAME_LABEL, "timeoutSeconds": str(WATCH_TIMEOUT_S)}
        async with self.client.stream("GET", self.path, params=params, headers=self._headers()) as response:
            if response.status_code == 410:
                raise Expired()
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.strip():
                    version = self._handle(json.loads(line), version)
        return version

    def _handle(self, event: dict[str, Any], version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Expired()
            raise httpx.HTTPError(f"the watch failed: {obj.get('message', obj)}")
        version = str(obj.get("metadata", {}).get("resourceVersion") or version)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self.on_event(SliceEvent.model_validate(event))
        return version

    async def run(self) -> None:
        """List and watch for ever (cancel the task to stop)."""
        backoff = FIRST_BACKOFF_S
        while True:
            try:
                version = await self.list_once()
                backoff = FIRST_BACKOFF_S
                while True:
                    version = await self.watch_once(version)
            except Expired:
                log.info("the EndpointSlice watch expired; listing again")
                continue
            except (httpx.HTTPError, ValueError, ValidationError, OSError) as exc:
                log.warning("watching EndpointSlices failed (%s); retrying in %.0f s", exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def aclose(self) -> None:
        await self.client.aclose()
