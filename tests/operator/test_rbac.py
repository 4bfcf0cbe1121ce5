"""RBAC derived from what the code does, not written by hand.

- The operator: every scenario of tests/operator runs against kmock with its requests recorded; each request the
  operator made (kopf's and its own client's, not the tests') becomes the RBAC verb, group and resource it needs
  (plus ``update`` on ``<owner>/finalizers`` for each child created with ``blockOwnerDeletion``, as
  OwnerReferencesPermissionEnforcement demands). The chart's operator Role must grant exactly that: a missing verb
  fails, and so does one the operator never uses.
- The router: the rules bound to its service account, evaluated by a small RBAC evaluator, never let it write a
  SpeechModel (or a SpeechRoute, a Deployment, a Secret), in any profile; they let it renew demand Leases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helm import helm, run  # noqa: F401 (helm is a fixture)
from tests.operator.conftest import Scenarios
from tests.unit.test_chart import CHART, find, render

ROOT = Path(__file__).resolve().parents[2]
Need = tuple[str, str, str]  # verb, API group, resource (with its subresource: "speechmodels/status")
# Rights the scenarios may not reach, each with the path that uses it (exempt from "unused" only, never "missing").
FAILURE_PATHS = {
    ("create", "", "events"): "kopf posts Kubernetes events of its handlers' warnings and errors",
    ("delete", "policy", "poddisruptionbudgets"): "finalizers on: a model's PDB deleted with it (one-replica models "
                                                  "of the scenarios have none)",
}


def parse(path: str) -> tuple[str, str, str | None, str | None] | None:
    """API group, plural, name and subresource of a resource URL (None: discovery and other non-resource URLs)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if rest[:1] == ["namespaces"]:
        if len(rest) < 3:
            return None  # a namespace itself: the operator never asks for one
        rest = rest[2:]
    if not rest:
        return None
    return group, rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)


def resource_of(path: str) -> tuple[str, str] | None:
    """The API group and resource[/subresource] of a resource URL."""
    parsed = parse(path)
    if parsed is None:
        return None
    group, plural, _, sub = parsed
    return group, f"{plural}/{sub}" if sub else plural


def verb_of(method: str, path: str, watch: bool) -> str:
    parsed = parse(path)
    named = parsed is not None and parsed[2] is not None
    if method == "GET":
        return "watch" if watch else ("get" if named else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete" if named else "deletecollection"
            }[method]


def derive(records: list[dict[str, Any]], plurals: dict[str, str]) -> set[Need]:
    """The RBAC the operator's requests need (``plurals``: ``group|Kind`` -> plural, for owner references)."""
    needed: set[Need] = set()
    for record in records:
        if not record["agent"].startswith(("kopf/", "OpenAPI-Generator")):
            continue  # the tests' own calls (aiohttp, httpx): what kubectl or the router would do
        where = resource_of(record["path"])
        if where is None:
            continue
        group, resource = where
        needed.add((verb_of(record["method"], record["path"], record["watch"]), group, resource))
        for owner in record["blocking_owners"]:
            api_version, kind = owner.split("|")
            owner_group = api_version.split("/")[0] if "/" in api_version else ""
            needed.add(("update", owner_group, plurals[f"{owner_group}|{kind}"] + "/finalizers"))
    return needed


def allows(rules: list[dict[str, Any]], verb: str, group: str, resource: str, name: str | None = None) -> bool:
    """Whether RBAC ``rules`` allow ``verb`` on ``group``/``resource`` (what the API server's authorizer does)."""
    for rule in rules:
        if not ({group, "*"} & set(rule.get("apiGroups") or [])):
            continue
        resources = set(rule.get("resources") or [])
        if resource not in resources and "*" not in resources and \
                not ("/" in resource and f"*/{resource.split('/', 1)[1]}" in resources):
            continue
        if not ({verb, "*"} & set(rule.get("verbs") or [])):
            continue
        names = rule.get("resourceNames") or []
        if names and (name is None or name not in names):
            continue
        return True
    return False


def granted(rules: list[dict[str, Any]]) -> set[Need]:
    return {(verb, group, resource) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def bound_rules(objects: list[dict[str, Any]], account: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(namespace or None for cluster-wide, rule) of every Role and ClusterRole bound to ServiceAccount ``account``."""
    out = []
    for binding in find(objects, "RoleBinding") + find(objects, "ClusterRoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding.get("subjects") or []):
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role = next(o for o in objects if o["kind"] == ref["kind"] and o["metadata"]["name"] == ref["name"]
                    and (ref["kind"] == "ClusterRole" or o["metadata"].get("namespace") == namespace))
        out += [(namespace, rule) for rule in role["rules"]]
    return out


def test_the_evaluator() -> None:
    rules = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "patch"]},
             {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a"]},
             {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}]
    assert allows(rules, "patch", "coordination.k8s.io", "leases")
    assert not allows(rules, "create", "coordination.k8s.io", "leases")
    assert not allows(rules, "patch", "harmony.dev", "speechmodels")
    assert allows(rules, "patch", "harmony.dev", "speechmodels/status")  # the wildcard subresource
    assert allows(rules, "get", "", "configmaps", "a") and not allows(rules, "get", "", "configmaps", "b")
    assert not allows(rules, "list", "", "configmaps")
    assert resource_of("/apis/harmony.dev/v1alpha1/namespaces/s/speechmodels/m/status") == \
        ("harmony.dev", "speechmodels/status")
    assert resource_of("/api/v1/namespaces/s/pods/p/log") == ("", "pods/log")
    assert resource_of("/apis/apps/v1") is None and resource_of("/api/v1/namespaces") is None
    assert verb_of("GET", "/api/v1/namespaces/s/pods", False) == "list"
    assert verb_of("GET", "/api/v1/namespaces/s/pods/p", False) == "get"
    assert verb_of("GET", "/apis/apps/v1/deployments", True) == "watch"
    assert verb_of("PATCH", "/apis/apps/v1/namespaces/s/deployments/d", False) == "patch"
    assert verb_of("GET", "/api/v1/namespaces/s/pods/p/log", False) == "get"


PROFILES = {"defaults": None, "cluster-wide": {"operator": {"clusterWide": True}},
            "namespaces": {"operator": {"watchNamespaces": ["speech", "speech-gpu"]}},
            "listed": {"router": {"modelNamespaces": ["team-a", "team-b"]}},
            "selector": {"router": {"modelNamespaceSelector": {"matchLabels": {"team": "speech"}}}}}


@pytest.mark.parametrize("values", list(PROFILES.values()), ids=list(PROFILES))
def test_the_router_can_never_write_a_speech_model(helm: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    objects = render(helm, tmp_path, values)
    rules = [rule for _, rule in bound_rules(objects, "harmony-router")]
    assert rules, "the router has no rights at all: scale from zero cannot work"
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        for resource in ("speechmodels", "speechmodels/status", "speechmodels/scale", "speechroutes"):
            assert not allows(rules, verb, "harmony.dev", resource), f"the router may {verb} {resource}"
        for group, resource in (("apps", "deployments"), ("", "secrets"), ("", "configmaps"), ("", "pods")):
            assert not allows(rules, verb, group, resource), f"the router may {verb} {resource}"
    assert not allows(rules, "get", "", "secrets")
    for verb in ("create", "patch"):
        assert allows(rules, verb, "coordination.k8s.io", "leases")


def scenario_requests(tmp_path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Every request the scenarios of tests/operator made, and why they failed (None: all passed). Recorded in this
    session when every scenario ran here and passed (this test runs last: conftest.py), else by running them again
    in a pytest of their own."""
    if Scenarios.complete():
        return Scenarios.records, None
    records_file = tmp_path / "requests.jsonl"
    env = {**os.environ, "HARMONY_RBAC_RECORD": str(records_file)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "operator"),
         "--ignore", str(Path(__file__))], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    return records, (None if result.returncode == 0 else result.stdout[-5000:])


def test_the_operators_rbac_is_exactly_what_its_calls_need(helm: Path, tmp_path: Path) -> None:
    records, failure = scenario_requests(tmp_path)
    plurals = {"harmony.dev|SpeechModel": "speechmodels", "harmony.dev|SpeechRoute": "speechroutes"}
    needed = derive(records, plurals)
    # The scenarios run with finalizers on and off: compare with the chart's rules for finalizers on, where the
    # operator deletes its children itself.
    objects = render(helm, tmp_path, {"operator": {"finalizers": True}})
    roles = find(objects, "Role", "harmony-operator")
    assert roles
    rules = granted(roles[0]["rules"])
    missing = sorted(needed - rules)
    unused = sorted(rules - needed - set(FAILURE_PATHS))
    assert not missing, f"the operator's calls need rights its Role lacks: {missing}"
    assert failure is None, "a scenario failed (its calls may be missing):\n" + failure
    assert not unused, f"the operator's Role grants rights no call uses: {unused}"
    assert CHART.exists()
