"""The CRDs: generated from the pydantic schema, committed in crds/ and in the chart, structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cli import main
from services.core.contracts.crd import crds, openapi_to_jsonschema, speech_model_crd, to_yaml

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "crds"
CHART = ROOT / "charts" / "harmony" / "files" / "crds"  # templates/crds.yaml renders them


def schema_nodes(node: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield where or "(root)", node
    for name, prop in node.get("properties", {}).items():
        yield from schema_nodes(prop, f"{where}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from schema_nodes(node[key], f"{where}[{key}]")


@pytest.mark.parametrize("name", sorted(crds()))
def test_committed_crds_equal_the_generator(name: str) -> None:
    committed = COMMITTED / name
    assert committed.read_text() == to_yaml(crds()[name]), \
        f"crds/{name} is stale: run `harmony crds --out crds` and `harmony crds --out charts/harmony/files/crds`"


def test_chart_crds_are_copies_of_crds_dir() -> None:
    assert sorted(p.name for p in CHART.glob("*.yaml")) == sorted(p.name for p in COMMITTED.glob("*.yaml"))
    for path in COMMITTED.glob("*.yaml"):
        assert (CHART / path.name).read_bytes() == path.read_bytes(), f"charts/harmony/files/crds/{path.name} differs"


@pytest.mark.parametrize("name", sorted(crds()))
def test_crds_are_valid_apiextensions_objects(name: str) -> None:
    kubernetes_validate.validate(yaml.safe_load((COMMITTED / name).read_text()), "1.33", strict=True)


@pytest.mark.parametrize("name", sorted(crds()))
def test_schemas_are_structural(name: str) -> None:
    version = crds()[name]["spec"]["versions"][0]
    for where, node in schema_nodes(version["schema"]["openAPIV3Schema"]):
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title"} & set(node), where
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") \
            or node.get("x-kubernetes-int-or-string"), f"{where} has no type"
        assert not ("properties" in node and "additionalProperties" in node), where
        assert not isinstance(node.get("exclusiveMinimum"), (int, float)) or isinstance(
            node.get("exclusiveMinimum"), bool), f"{where}: OpenAPI v3.0 exclusiveMinimum is a boolean"


def test_preserve_unknown_fields_only_where_needed() -> None:
    spec = speech_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    preserved = [where for where, node in schema_nodes(spec) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".options[additionalProperties]", ".affinity",
                         ".topology_spread_constraints[items].labelSelector", ".env[items].valueFrom"]


def test_speech_model_crd_shape() -> None:
    crd = speech_model_crd()
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["group"] == "harmony.dev" and version["name"] == "v1alpha1"
    assert crd["spec"]["scope"] == "Namespaced"
    assert version["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas",
                                                "statusReplicasPath": ".status.replicas",
                                                "labelSelectorPath": ".status.selector"}
    assert "status" in version["subresources"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Task"] == ".spec.task" and columns["Backend"] == ".spec.backend"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Replicas"] == ".status.replicas" and columns["Available"] == ".status.readyReplicas"
    assert columns["Age"] == ".metadata.creationTimestamp"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["task", "backend", "source"]
    assert spec["properties"]["replicas"]["default"] == 1  # the scale subresource needs a value
    autoscaling = spec["properties"]["autoscaling"]
    assert autoscaling["nullable"] is True and "default" not in autoscaling["properties"]["target_cpu_utilization"]
    assert spec["properties"]["node_selector"]["additionalProperties"] == {"type": "string"}
    assert spec["properties"]["tolerations"]["items"]["properties"]["tolerationSeconds"]["type"] == "integer"


def test_openapi_to_jsonschema_handles_nullable_and_int_or_string() -> None:
    schema = openapi_to_jsonschema({"type": "object", "properties": {
        "a": {"type": "integer", "nullable": True}, "b": {"x-kubernetes-int-or-string": True}}})
    assert schema["properties"]["a"]["type"] == ["integer", "null"]
    assert schema["properties"]["b"]["type"] == ["integer", "string"]


def test_cli_prints_and_writes_the_crds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["crds"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["metadata"]["name"] for d in documents] == ["speechmodels.harmony.dev", "speechroutes.harmony.dev"]
    assert main(["crds", "--out", str(tmp_path)]) == 0
    for path in COMMITTED.glob("*.yaml"):
        assert (tmp_path / path.name).read_text() == path.read_text()
