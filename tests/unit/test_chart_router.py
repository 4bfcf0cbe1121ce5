"""The router's data plane in the chart, in every values profile: a preStop that keeps the pod serving while it
leaves the endpoints, a grace period that covers it and the drain, a spool budget below its bounded /tmp, an HPA
where asked (the production profiles), and a PodDisruptionBudget only where it can be satisfied."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
PROFILES = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]
UNITS = {"": 1, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9}


def quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([A-Za-z]*)", str(text)).groups()  # type: ignore[union-attr]
    return int(number) * UNITS[unit]


def render(helm: Path, values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "harmony", str(CHART), "--namespace", "speech"]
    args += ["--values", str(values)] if values else []
    for item in sets:
        args += ["--set", item]
    return [d for d in yaml.safe_load_all(run(helm, *args)) if d]


def router_objects(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects if o["metadata"]["name"].endswith("-router")}


def flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in container["args"] if "=" in arg)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem if p else "default")
def test_the_router_drains_and_holds_no_more_than_its_tmp(helm: Path, profile: Path | None) -> None:
    objects = router_objects(render(helm, profile))
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    router = pod["containers"][0]
    command = router["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    pre_stop_s = float(re.fullmatch(r"import time; time\.sleep\((\d+(?:\.\d+)?)\)", command[2]).group(1))  # type: ignore[union-attr]
    assert pre_stop_s >= 3  # long enough for endpoint removal to reach kube-proxy, ingresses and other routers
    drain_s = float(flags(router)["drain-timeout"])
    assert pod["terminationGracePeriodSeconds"] >= pre_stop_s + drain_s + 5
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    budget = int(flags(router)["spool-budget-bytes"])
    upload = int(flags(router)["max-upload-bytes"])
    assert upload <= budget < quantity(tmp["emptyDir"]["sizeLimit"])
    replicas = objects["Deployment"]["spec"].get("replicas")
    hpa = objects.get("HorizontalPodAutoscaler")
    if hpa is not None:
        assert replicas is None  # the HPA owns the count: an upgrade must not reset it
        assert hpa["spec"]["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        fewest = hpa["spec"]["minReplicas"]
    else:
        fewest = replicas
    pdb = objects.get("PodDisruptionBudget")
    if fewest >= 2:
        assert pdb is not None and pdb["spec"]["minAvailable"] < fewest
        assert pdb["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]
    else:
        assert pdb is None  # one replica cannot satisfy minAvailable 1: every node drain would hang on it


def test_the_production_profiles_autoscale_the_router(helm: Path) -> None:
    for name in ("ingress-values.yaml", "keda-values.yaml"):
        assert "HorizontalPodAutoscaler" in router_objects(render(helm, CHART / "ci" / name)), name
    assert "HorizontalPodAutoscaler" not in router_objects(render(helm))  # off by default


def test_the_hpa_scales_on_cpu_or_on_requests_in_flight(helm: Path) -> None:
    cpu = router_objects(render(helm, None, "router.autoscaling.enabled=true"))["HorizontalPodAutoscaler"]
    assert cpu["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    in_flight = router_objects(render(helm, None, "router.autoscaling.enabled=true",
                                      "router.autoscaling.targetInFlight=64",
                                      "router.autoscaling.targetCPUUtilizationPercentage=null"))
    assert in_flight["HorizontalPodAutoscaler"]["spec"]["metrics"] == [{"type": "Pods", "pods": {
        "metric": {"name": "harmony_http_in_flight_requests"},
        "target": {"type": "AverageValue", "averageValue": "64"}}}]


@pytest.mark.parametrize("sets, pdb", [
    (("router.replicas=1",), False),
    (("router.replicas=2",), True),
    (("router.autoscaling.enabled=true", "router.autoscaling.minReplicas=1"), False),
    (("router.autoscaling.enabled=true", "router.autoscaling.minReplicas=3"), True),
])
def test_a_pdb_only_where_it_can_be_satisfied(helm: Path, sets: tuple[str, ...], pdb: bool) -> None:
    assert ("PodDisruptionBudget" in router_objects(render(helm, None, *sets))) is pdb
