"""List and watch one collection of the Kubernetes API, for ever, and report what it holds.

List, then watch from the list's ``resourceVersion`` (with bookmarks, so a quiet watch resumes where it
was); when the watch ends it is opened again from the last version seen, and when that version has expired
(410 Gone) the collection is listed again. Any other failure is logged and retried after a back-off (1 s,
doubling up to 30 s): the watch never stops while the router runs, and the router keeps serving with what it
knew meanwhile. ``on_reset`` gets every list's items, ``on_event`` every change between lists. A collection is
one namespace's (``/namespaces/<ns>/<plural>``) or every namespace's; label and field selectors are sent, but
the consumers check what they get as well (an API server that ignores a selector sends more).

Calls carry the pod's service account token, re-read for every request (projected tokens rotate).
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

log = logging.getLogger("harmony.router.watch")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
WATCH_TIMEOUT_S = 300  # the API server ends a watch after this; it is opened again from where it was
FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 30.0

OnItems = Callable[[list[dict[str, Any]]], None]
OnChange = Callable[[str, dict[str, Any]], None]  # ADDED, MODIFIED or DELETED; the object


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def collection(prefix: str, plural: str, namespace: str | None) -> str:
    """The path of ``plural`` (API ``prefix``: ``/api/v1``, ``/apis/<group>/<version>``) in ``namespace``, or in
    every namespace (None)."""
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


def in_cluster_client() -> httpx.AsyncClient:
    """A client for the API server, with the pod's service account CA. No read timeout to speak of: a watch is
    quiet while nothing changes (the server ends it after WATCH_TIMEOUT_S)."""
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    verify = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
    return httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=verify,
                             timeout=httpx.Timeout(10.0, read=WATCH_TIMEOUT_S + 30))


def own_namespace() -> str:
    return (SERVICE_ACCOUNT / "namespace").read_text().strip()


class ApiWatch:
    """The list-and-watch loop of one collection (see the module's docstring)."""

    what = "objects"  # for the log

    def __init__(self, client: httpx.AsyncClient, path: str, on_items: OnItems, on_change: OnChange,
                 params: dict[str, str] | None = None, token_file: Path | None = None) -> None:
        self.client = client
        self.path = path
        self.on_items = on_items
        self.on_change = on_change
        self.params = params or {}
        self.token_file = token_file

    def _headers(self) -> dict[str, str]:
        if self.token_file is None:
            return {}
        return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}

    async def list_once(self) -> str:
        """List the collection, report it all; the list's resourceVersion."""
        response = await self.client.get(self.path, params=self.params, headers=self._headers())
        response.raise_for_status()
        body = response.json()
        self.on_items(list(body.get("items") or []))
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    async def watch_once(self, version: str) -> str:
        """Watch from ``version`` until the server ends the watch; the last resourceVersion seen."""
        params = {**self.params, "watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_TIMEOUT_S)}
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
            self.on_change(str(kind), obj)
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
                log.info("the %s watch (%s) expired; listing again", self.what, self.path)
                continue
            except (httpx.HTTPError, ValueError, ValidationError, OSError) as exc:
                log.warning("watching %s (%s) failed (%s); retrying in %.0f s", self.what, self.path, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def aclose(self) -> None:
        await self.client.aclose()
