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


RBAC_TEST = "test_rbac.py::test_the_operators_rbac_is_exactly_what_its_calls_need"


class Scenarios:
    """The requests every scenario of this directory made in this session (test_rbac.py derives the operator's RBAC
    from them), and whether every scenario ran and passed: then the RBAC test, run last, needs no replay."""

    records: list[dict[str, Any]] = []
    expected: set[str] = set()   # node ids of the scenarios collected (every test here but test_rbac.py's)
    passed: set[str] = set()
    incomplete = False           # a test file of this directory not collected, or a scenario deselected

    @classmethod
    def complete(cls) -> bool:
        return not cls.incomplete and bool(cls.expected) and cls.expected <= cls.passed


def _records(kmock: Any) -> list[dict[str, Any]]:
    out = []
    for request in list(kmock):
        data = request.data if isinstance(request.data, dict) else {}
        owners = (data.get("metadata") or {}).get("ownerReferences") or []
        out.append({"method": str(request.method.value), "path": request.url.path,
                    "watch": request.params.get("watch") == "true", "agent": request.headers.get("User-Agent", ""),
                    "blocking_owners": [o.get("apiVersion", "") + "|" + o.get("kind", "")
                                        for o in owners if o.get("blockOwnerDeletion")]})
    return out


def _record_requests(kmock: Any) -> None:
    """Keep every request of the test; in a replay (HARMONY_RBAC_RECORD) also append them to that JSON-lines file."""
    records = _records(kmock)
    Scenarios.records += records
    if os.environ.get("HARMONY_RBAC_RECORD"):
        with open(os.environ["HARMONY_RBAC_RECORD"], "a") as out:
            out.writelines(json.dumps(record) + "\n" for record in records)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The RBAC test runs after every scenario; the scenarios collected are noted (see ``Scenarios``)."""
    here = Path(__file__).parent
    mine = [item for item in items if Path(str(item.path)).parent == here]
    rbac = [item for item in mine if item.nodeid.endswith(RBAC_TEST)]
    for item in rbac:
        items.remove(item)
        items.append(item)
    Scenarios.expected = {item.nodeid for item in mine if item not in rbac and "test_rbac.py" not in item.nodeid}
    files = {Path(str(item.path)).name for item in mine}
    Scenarios.incomplete = any(path.name not in files for path in here.glob("test_*.py"))


def pytest_deselected(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    if any(Path(str(item.path)).parent == here and "test_rbac.py" not in item.nodeid for item in items):
        Scenarios.incomplete = True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in Scenarios.expected and report.when == "call" and report.passed:
        Scenarios.passed.add(report.nodeid)


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
    _record_requests(kmock)


@pytest.fixture
async def api(cluster: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test's own calls (what kubectl would do)."""
    async with aiohttp.ClientSession(base_url=str(cluster.url)) as session:
        yield session


def pytest_configure(config: pytest.Config) -> None:
    # kmock 0.8 loads its bundled resource list with a deprecated importlib call.
    config.addinivalue_line("filterwarnings", "ignore:read_binary is deprecated:DeprecationWarning")
