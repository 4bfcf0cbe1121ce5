"""The router's side of scale to zero: it tells the operator when a model that scales to zero is asked for.

The report is the SpeechModel's annotation ``harmony.dev/last-request`` (an RFC 3339 time), written
with a JSON merge patch: at once when a request waits for a model with no ready replica (the
wake-up call), and every ``report_interval_s`` for models asked for since the last report, so the
operator knows when one is idle. This needs only ``patch`` on SpeechModels in the router's own
namespace; the operator stays the only writer of the Deployment and its replicas. A failed report is
logged and tried again with the next one; it never fails a request.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from services.core.contracts.wire import LAST_REQUEST_ANNOTATION

log = logging.getLogger("harmony.router.wake")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SPEECH_MODELS = "/apis/harmony.dev/v1alpha1/namespaces/{namespace}/speechmodels/{name}"
Report = Callable[[str, float], Awaitable[None]]  # model name, epoch seconds of its last request


class Waker(Protocol):
    def touch(self, name: str) -> None:
        """Model ``name`` (one that scales to zero) was asked for now."""

    def wake(self, name: str) -> None:
        """Model ``name`` has no ready replica and a request waits for one: report it at once."""


class NoWaker:
    """Outside Kubernetes (``harmony serve``): nobody to tell."""

    def touch(self, name: str) -> None:
        pass

    def wake(self, name: str) -> None:
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

    def touch(self, name: str) -> None:
        self._last[name] = time.time()

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
        """Report every model asked for since its last report."""
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


@dataclass
class SpeechModelAnnotator:
    """Writes ``harmony.dev/last-request`` on a SpeechModel through the Kubernetes API (a JSON merge patch)."""

    client: httpx.AsyncClient
    namespace: str
    token_file: Path | None = None  # re-read for every call: projected tokens rotate

    @classmethod
    def in_cluster(cls, namespace: str | None = None) -> SpeechModelAnnotator:
        """With the pod's service account (its token, CA and namespace)."""
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        namespace = namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        verify = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        client = httpx.AsyncClient(base_url=f"https://{host}:{port}", verify=verify, timeout=5.0)
        return cls(client, namespace, SERVICE_ACCOUNT / "token")

    async def __call__(self, name: str, at: float) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        if self.token_file is not None:
            headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
        body = {"metadata": {"annotations": {LAST_REQUEST_ANNOTATION: rfc3339(at)}}}
        response = await self.client.patch(SPEECH_MODELS.format(namespace=self.namespace, name=name),
                                           json=body, headers=headers)
        response.raise_for_status()

    async def aclose(self) -> None:
        await self.client.aclose()
