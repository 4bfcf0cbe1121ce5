"""The chart runs the operator highly available: two replicas, rolled one at a time, one leader by a Lease."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm import helm  # noqa: F401 (a fixture)
from tests.operator.test_rbac import allows, bound_rules
from tests.unit.test_chart import find, render

OPERATOR = "harmony-operator"


def operator_deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "Deployment", OPERATOR)[0]


def env(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_two_replicas_rolled_one_at_a_time_with_leader_election(helm: Path, tmp_path: Path) -> None:
    deployment = operator_deployment(render(helm, tmp_path))
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    variables = env(deployment)
    assert variables["HARMONY_LEADER_ELECTION"] == "true"
    assert float(variables["HARMONY_LEADER_RENEW_DEADLINE_S"]) < float(variables["HARMONY_LEADER_LEASE_S"])
    # The standby serves the liveness probe's port until it leads.
    probe_port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert variables["HARMONY_STANDBY_HEALTH_PORT"] == str(probe_port)
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_without_leader_election_one_operator_at_a_time(helm: Path, tmp_path: Path) -> None:
    deployment = operator_deployment(render(helm, tmp_path, {"operator": {"leaderElection": {"enabled": False}}}))
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert env(deployment)["HARMONY_LEADER_ELECTION"] == "false"


@pytest.mark.parametrize("values", [None, {"operator": {"watchNamespaces": ["speech-a", "speech-b"]}},
                                    {"operator": {"clusterWide": True}}],
                         ids=["defaults", "other-namespaces", "cluster-wide"])
def test_the_operator_may_take_and_renew_its_lease_in_the_release_namespace(
        helm: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    objects = render(helm, tmp_path, values)
    rules = [rule for namespace, rule in bound_rules(objects, OPERATOR) if namespace in ("speech", None)]
    group = "coordination.k8s.io"
    assert allows(rules, "create", group, "leases")
    for verb in ("get", "patch"):
        assert allows(rules, verb, group, "leases", "harmony-operator")
    assert not allows(rules, "update", group, "leases", "harmony-operator")
    assert not allows(rules, "patch", group, "leases", "harmony-demand-whisper")  # the router's demand Leases


def test_a_drain_leaves_an_operator(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    budget = find(objects, "PodDisruptionBudget", OPERATOR)[0]["spec"]
    labels = operator_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    assert budget["maxUnavailable"] == 1 and budget["selector"]["matchLabels"].items() <= labels.items()
    assert not find(render(helm, tmp_path, {"operator": {"replicas": 1}}), "PodDisruptionBudget", OPERATOR)
