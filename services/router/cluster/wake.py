"""The router's side of scale to zero: it tells the operator when a model that scales to zero is asked for.

The report is a coordination.k8s.io/v1 Lease per model, ``harmony-demand-<model>`` in the model's namespace
(label ``harmony.dev/demand``), whose ``spec.renewTime`` is when the model was last asked for and whose
``holderIdentity`` is the router pod. It is renewed at once when a request waits for a model with no ready
replica (the wake-up call), every ``report_interval_s`` for models asked for since the last report, and every
``report_interval_s`` for as long as a request is held for a model (so the operator never puts a model to zero
while someone waits for it). The router never writes SpeechModels: its service account may only get, create,
update and patch Leases; the operator stays the only writer of SpeechModels, Deployments and replicas. A failed
report is logged and tried again with the next one; it never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

from services.core.contracts.wire import DEMAND_LABEL, demand_lease_name

log = logging.getLogger("harmony.router.wake")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
Report = Callable[[str, float], Awaitable[None]]  # model name, epoch seconds of its last request


class Waker(Protocol):
    def touch(self, name: str) -> None:
        """Model ``name`` (one that scales to zero) was asked for now."""

    def wake(self, name: str) -> None:
        """Model ``name`` has no ready replica and a request waits for one: report it at once."""

    def holding(self, name: str, change: int) -> None:
        """A request for model ``name`` is held (+1) or no longer held (-1): held ones are demand until released."""


class NoWaker:
    """Outside Kubernetes (``harmony serve``): nobody to tell."""

    def touch(self, name: str) -> None:
        pass

    def wake(self, name: str) -> None:
        pass

    def holding(self, name: str, change: int) -> None:
        pass


def rfc3339(epoch_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ModelWaker:
    """Remembers each model's last request and reports it through ``report`` (see the module's docstring)."""

    def __init__(self, report: Report, report_interval_s: float = 10.0) -> None:
        self.report = report
        self.report_interval_s = report_interval_s
        self._last: dict[str, float] = {}
        self._reported: dict[str, float] = {}
        self._urgent: dict[str, asyncio.Task] = {}
        self._held: dict[str, int] = {}

    def touch(self, name: str) -> None:
        self._last[name] = time.time()

    def holding(self, name: str, change: int) -> None:
        held = self._held.get(name, 0) + change
        if held > 0:
            self._held[name] = held
        else:
            self._held.pop(name, None)
        self.touch(name)  # a release is demand too: the request goes on to the model now

    def wake(self, name: str) -> None:
        self.touch(name)
        if name not in self._urgent:  # one wake-up call at a time per model; the periodic report follows
            task = asyncio.get_running_loop().create_task(self._report(name), name=f"wake-{name}")
            self._urgent[name] = task
            task.add_done_callback(lambda _: self._urgent.pop(name, None))

    async def _report(self, name: str) -> None:
        at = self._last[name]
        if at <= self._reported.get(name, 0.0):
            return
        try:
            await self.report(name, at)
        except (httpx.HTTPError, OSError) as exc:
            log.warning("could not report a request for model %s to the operator: %s", name, exc)
            return
        self._reported[name] = max(at, self._reported.get(name, 0.0))

    async def flush(self) -> None:
        """Report every model asked for since its last report, and every model a request is held for."""
        for name in list(self._held):
            self.touch(name)
        for name in list(self._last):
            await self._report(name)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.report_interval_s)
            await self.flush()

    async def aclose(self) -> None:
        for task in list(self._urgent.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def microtime(epoch_s: float) -> str:
    """A Kubernetes MicroTime (a Lease's renewTime)."""
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(name: str, namespace: str, holder: str, at: float, duration_s: int) -> dict:
    """The demand Lease of model ``name`` as the router creates it."""
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": demand_lease_name(name), "namespace": namespace,
                         "labels": {DEMAND_LABEL: "true", "app.kubernetes.io/managed-by": "harmony-router"}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration_s, "renewTime": microtime(at)}}


@dataclass
class DemandLeases:
    """Creates or renews a model's demand Lease through the Kubernetes API (see the module's docstring).

    ``namespace_of``: the namespace of a model (by name); default: the router's own namespace for every model."""

    client: httpx.AsyncClient
    namespace: str
    token_file: Path | None = None  # re-read for every call: projected tokens rotate
    holder: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "harmony-router"))
    duration_s: int = 60
    namespace_of: Callable[[str], str | None] | None = None

    @classmethod
    def in_cluster(cls, namespace: str | None = None) -> DemandLeases:
        """With the pod's service account (its token, CA and namespace)."""
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        namespace = namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        verify = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        client = httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=verify, timeout=5.0)
        return cls(client, namespace, SERVICE_ACCOUNT / "token")

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        return headers

    async def __call__(self, name: str, at: float) -> None:
        namespace = (self.namespace_of(name) if self.namespace_of else None) or self.namespace
        url = LEASES.format(namespace=namespace)
        renew = {"spec": {"holderIdentity": self.holder, "leaseDurationSeconds": self.duration_s,
                          "renewTime": microtime(at)}}
        merge = self._headers("application/merge-patch+json")
        response = await self.client.patch(f"{url}/{demand_lease_name(name)}", json=renew, headers=merge)
        if response.status_code == 404:  # the first demand for this model: create its Lease
            body = lease_body(name, namespace, self.holder, at, self.duration_s)
            response = await self.client.post(url, json=body, headers=self._headers("application/json"))
            if response.status_code == 409:  # another router replica created it meanwhile
                response = await self.client.patch(f"{url}/{demand_lease_name(name)}", json=renew, headers=merge)
        response.raise_for_status()

    async def aclose(self) -> None:
        await self.client.aclose()
