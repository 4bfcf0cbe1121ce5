"""The operator against kmock, a Kubernetes API emulator: a real kopf run, real HTTP.

kmock stores what the operator creates and patches, and records every request; it
has no garbage collection, resourceVersion, generation, schema or PUT, so tests
check what the operator asked for, not what a real API server would derive.
Set HARMONY_TEST_OPERATOR_LOG=1 to print the operator's log after each test.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

os.environ.setdefault("HARMONY_RECONCILE_INTERVAL_S", "300")  # the periodic pass: never, in a test
os.environ.setdefault("HARMONY_RETRY_BASE_DELAY_S", "0.2")
os.environ.setdefault("HARMONY_SCALE_CHECK_INTERVAL_S", "0.5")  # the idle check of models that scale to zero

GROUP_VERSION = "harmony.dev/v1alpha1"


def _record_requests(kmock: Any, to: str) -> None:
    """Append every request of the test to the JSON-lines file ``to`` (test_rbac.py derives the operator's RBAC)."""
    with open(to, "a") as out:
        for request in list(kmock):
            data = request.data if isinstance(request.data, dict) else {}
            owners = (data.get("metadata") or {}).get("ownerReferences") or []
            out.write(json.dumps({"method": str(request.method.value), "path": request.url.path,
                                  "watch": request.params.get("watch") == "true",
                                  "agent": request.headers.get("User-Agent", ""),
                                  "blocking_owners": [o.get("apiVersion", "") + "|" + o.get("kind", "")
                                                      for o in owners if o.get("blockOwnerDeletion")]}) + "\n")


@pytest.fixture
def cluster(kmock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
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
    yield kmock
    if os.environ.get("HARMONY_RBAC_RECORD"):
        _record_requests(kmock, os.environ["HARMONY_RBAC_RECORD"])


@pytest.fixture
async def api(cluster: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test's own calls (what kubectl would do)."""
    async with aiohttp.ClientSession(base_url=str(cluster.url)) as session:
        yield session


def pytest_configure(config: pytest.Config) -> None:
    # kmock 0.8 loads its bundled resource list with a deprecated importlib call.
    config.addinivalue_line("filterwarnings", "ignore:read_binary is deprecated:DeprecationWarning")
