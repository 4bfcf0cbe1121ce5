"""API versions: v1beta1 served beside v1alpha1 (the storage version) with conversion None, which is only sound
while every served version has the same schema; objects written as v1alpha1 read the same through v1beta1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.core.contracts.crd import NEXT_VERSION, VERSION, crds, openapi_to_jsonschema
from services.core.contracts.specs import SpeechModelSpec, SpeechRouteSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PLURAL = {"SpeechModel": "speechmodels.yaml", "SpeechRoute": "speechroutes.yaml"}


def versions(name: str) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in crds()[name]["spec"]["versions"]}


@pytest.mark.parametrize("name", sorted(crds()))
def test_both_versions_served_one_stored(name: str) -> None:
    served = versions(name)
    assert list(served) == [VERSION, NEXT_VERSION] == ["v1alpha1", "v1beta1"]
    assert all(v["served"] for v in served.values())
    assert [v["name"] for v in served.values() if v["storage"]] == ["v1alpha1"]
    assert crds()[name]["spec"]["conversion"] == {"strategy": "None"}


@pytest.mark.parametrize("name", sorted(crds()))
def test_conversion_none_only_while_the_versions_agree(name: str) -> None:
    """With strategy None the API server converts by rewriting apiVersion: any schema difference between served
    versions needs a conversion webhook first (docs/kubernetes.md, "API versions")."""
    old, new = versions(name)[VERSION], versions(name)[NEXT_VERSION]
    for key in ("schema", "subresources", "additionalPrinterColumns"):
        assert old[key] == new[key], f"{key} differs between {VERSION} and {NEXT_VERSION}: conversion None is unsound"
    assert "&id" not in (ROOT / "crds" / name).read_text()  # copies, not YAML aliases


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_old_objects_read_through_the_new_version(path: Path) -> None:
    """What `kubectl get speechmodels.v1beta1.harmony.dev` answers for an object stored as v1alpha1: the same object
    under the new apiVersion (conversion None), valid against v1beta1's schema, parsed to the same spec."""
    stored = yaml.safe_load(path.read_text())
    assert stored["apiVersion"] == f"harmony.dev/{VERSION}"
    read = {**stored, "apiVersion": f"harmony.dev/{NEXT_VERSION}"}
    schema = versions(PLURAL[stored["kind"]])[NEXT_VERSION]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(openapi_to_jsonschema(schema)).validate(read)
    model = SpeechModelSpec if stored["kind"] == "SpeechModel" else SpeechRouteSpec
    assert model.model_validate(read["spec"]) == model.model_validate(stored["spec"])
