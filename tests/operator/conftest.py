"""The operator against kmock, a Kubernetes API emulator: a real kopf run, real HTTP.

kmock stores what the operator creates and patches, and records every request; it
has no garbage collection, resourceVersion, generation, schema or PUT, so tests
check what the operator asked for, not what a real API server would derive.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aiohttp
import pytest
import yaml

os.environ.setdefault("HARMONY_RECONCILE_INTERVAL_S", "300")  # read when the handlers are imported
os.environ.setdefault("HARMONY_RETRY_BASE_DELAY_S", "0.2")

from kopf.testing import KopfRunner  # noqa: E402

GROUP_VERSION = "harmony.dev/v1alpha1"
NAMESPACE = "speech"


@pytest.fixture
def cluster(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """kmock with the built-in resources and our CRDs, and $KUBECONFIG pointing at it."""
    kmock.resources.load_bundled()
    for plural, kind in (("speechmodels", "SpeechModel"), ("speechroutes", "SpeechRoute")):
        kmock.resources[f"{GROUP_VERSION}/{plural}"] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"},
            subresources={"status"} | ({"scale"} if kind == "SpeechModel" else set()))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "kmock", "user": {"token": "test"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return kmock


def watching(kmock: Any, plural: str) -> bool:
    return any(r.method == "GET" and r.params.get("watch") == "true" and f"/{plural}" in str(r.url)
               for r in list(kmock))


async def eventually(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll ``check`` (without blocking kmock's loop) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (KeyError, IndexError, TypeError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_operator(kmock: Any) -> AsyncIterator[KopfRunner]:
    """kopf in its own thread and loop; stopped off this loop, where kmock must keep answering."""
    runner = KopfRunner(["run", "-A", "--standalone", "-m", "harmony_operator.handlers"], timeout=60)
    runner.__enter__()
    failed = False
    try:
        for plural in ("speechmodels", "speechroutes", "deployments", "configmaps"):
            await eventually(lambda: watching(kmock, plural), 30, f"kopf to watch {plural}")
        yield runner
    except BaseException:
        failed = True
        raise
    finally:
        await asyncio.get_running_loop().run_in_executor(None, runner.__exit__, None, None, None)
        if failed or os.environ.get('SHOWLOG'):
            print(runner.output[-30_000:])  # the operator's log, shown with the failure


def stored(kmock: Any, resource: str, name: str, namespace: str = NAMESPACE) -> dict[str, Any] | None:
    """The object as kmock holds it now (None: never created, or deleted)."""
    try:
        item = kmock.objects[resource, namespace, name]
    except KeyError:
        return None
    return None if item.deleted else copy.deepcopy(dict(item.raw))


def requests(kmock: Any, method: str, fragment: str) -> list[Any]:
    return [r for r in list(kmock) if r.method == method and fragment in str(r.url)]


@pytest.fixture
async def api(cluster: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test's own calls (what kubectl would do)."""
    async with aiohttp.ClientSession(base_url=str(cluster.url)) as session:
        yield session


def pytest_configure(config: pytest.Config) -> None:
    # kmock 0.8 loads its bundled resource list with a deprecated importlib call.
    config.addinivalue_line("filterwarnings", "ignore:read_binary is deprecated:DeprecationWarning")
