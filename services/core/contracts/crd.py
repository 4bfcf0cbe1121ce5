"""The SpeechModel and SpeechRoute CustomResourceDefinitions, generated from the pydantic schema.

``crds/`` holds the output of :func:`crds` (``harmony crds --out crds``); a test keeps
the committed YAML equal to it. Pydantic's JSON schema is turned into a Kubernetes
*structural* schema: ``$ref`` inlined, titles dropped, ``Optional[X]`` as X with
``nullable: true``, numeric exclusive bounds in the OpenAPI v3.0 form, dict fields as
``additionalProperties``, and ``x-kubernetes-preserve-unknown-fields`` only where a
value may have several types (backend options) or is a Kubernetes object passed as
is (affinity). Defaults are left to the operator (pydantic applies them), except for
top-level scalars such as ``replicas``, which the scale subresource needs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from services.core.contracts.specs import SpeechModelSpec, SpeechRouteSpec
from services.core.contracts.wire import SpeechModelStatus, SpeechRouteStatus

GROUP = "harmony.dev"
VERSION = "v1alpha1"  # the storage version, and the one the operator and router use
API_VERSION = f"{GROUP}/{VERSION}"
# Served beside VERSION with the same schema, so conversion is None (the API server rewrites apiVersion only);
# an incompatible schema needs a conversion webhook first (docs/kubernetes.md, "API versions").
NEXT_VERSION = "v1beta1"
CATEGORY = "harmony"

# JSON-schema keywords that are value validations and survive unchanged.
_KEEP = {"type", "description", "enum", "pattern", "minimum", "maximum", "minLength", "maxLength",
         "minItems", "maxItems", "format", "required", "uniqueItems", "default", "nullable"}


def structural(schema: dict[str, Any], keep_top_defaults: bool = False) -> dict[str, Any]:
    """Turn a pydantic JSON schema (with ``$defs``) into a structural OpenAPI v3.0 schema."""
    defs = schema.get("$defs", {})
    out = _convert({k: v for k, v in schema.items() if k != "$defs"}, defs)
    return _ordered(_drop_defaults(out, keep_scalars=keep_top_defaults))


def _drop_defaults(node: dict[str, Any], keep_scalars: bool) -> dict[str, Any]:
    """Keep only the top-level scalar defaults: nested ones would make 'unset' and 'default' the same."""
    out = dict(node)
    if "properties" in out:
        cleaned = {}
        for name, prop in out["properties"].items():
            if not keep_scalars or isinstance(prop.get("default"), (dict, list)):
                prop = {k: v for k, v in prop.items() if k != "default"}
            cleaned[name] = _drop_defaults(prop, keep_scalars=False)
        out["properties"] = cleaned
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _drop_defaults({k: v for k, v in out[key].items() if k != "default"}, keep_scalars=False)
    return out


_FIRST = ["type", "description", "nullable", "default", "enum"]
_LAST = ["properties", "items", "additionalProperties", "required"]


def _rank(key: str) -> tuple[int, int]:
    if key in _FIRST:
        return 0, _FIRST.index(key)
    return (2, _LAST.index(key)) if key in _LAST else (1, 0)


def _ordered(node: Any) -> Any:
    """Keys in a readable order: type and description first, nested schemas last."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key in sorted(node, key=_rank):
        value = node[key]
        if key == "properties":
            value = {name: _ordered(prop) for name, prop in value.items()}
        elif key in ("items", "additionalProperties"):
            value = _ordered(value)
        out[key] = value
    return out


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _convert({**target, **extra}, defs)
    if "anyOf" in node:
        return _convert_any_of(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(prop, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _convert(value, defs)
            # ``false`` (extra="forbid") is the pruning default of apiextensions/v1 and may not
            # stand beside ``properties``: dropped.
        elif key in _KEEP or key.startswith("x-kubernetes-"):
            out[key] = value
    if "default" in out and out["default"] is None:
        del out["default"]
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and not out.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-preserve-unknown-fields"] = True  # ``Any``: a value of any type
    return out


def _convert_any_of(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    options = [_convert(o, defs) for o in node["anyOf"]]
    nullable = any(o.get("type") == "null" for o in options)
    options = [o for o in options if o.get("type") != "null"]
    outer = {k: v for k, v in node.items() if k in ("description", "default")}
    if len(options) == 1:
        out = {**options[0], **outer}
    elif {o.get("type") for o in options} == {"integer", "string"}:
        out = {"x-kubernetes-int-or-string": True, **outer}
    else:
        out = {"x-kubernetes-preserve-unknown-fields": True, **outer}
    if nullable and "enum" not in out:
        # An enum field stays non-nullable: the API server checks null against the enum and refuses it.
        out["nullable"] = True
        if out.get("default") is None:
            out.pop("default", None)
    return out


def _object_schema(kind: str, spec_schema: dict[str, Any], status_schema: dict[str, Any],
                   description: str) -> dict[str, Any]:
    status = structural(status_schema)
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(spec_schema, keep_top_defaults=True),
            "status": status,
        },
    }


def _crd(kind: str, plural: str, short: str, schema: dict[str, Any], subresources: dict[str, Any],
         columns: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "harmony"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": [short], "categories": [CATEGORY]},
            "conversion": {"strategy": "None"},
            "versions": [{
                "name": version,
                "served": True,
                "storage": version == VERSION,
                # copies: one object written twice would come out as YAML anchors and aliases
                "subresources": copy.deepcopy(subresources),
                "additionalPrinterColumns": copy.deepcopy(columns),
                "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
            } for version in (VERSION, NEXT_VERSION)],
        },
    }


def speech_model_crd() -> dict[str, Any]:
    schema = _object_schema("SpeechModel", SpeechModelSpec.model_json_schema(),
                            SpeechModelStatus.model_json_schema(),
                            "A speech model served by an autoscaled, batching model service.")
    return _crd("SpeechModel", "speechmodels", "sm", schema, {
        "status": {},
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                  "labelSelectorPath": ".status.selector"},
    }, [
        {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
        {"name": "Backend", "type": "string", "jsonPath": ".spec.backend"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Available", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Cold-Start", "type": "number", "jsonPath": ".status.coldStartSeconds", "priority": 1},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ])


def speech_route_crd() -> dict[str, Any]:
    schema = _object_schema("SpeechRoute", SpeechRouteSpec.model_json_schema(),
                            SpeechRouteStatus.model_json_schema(),
                            "A public model name served by a pipeline of SpeechModels.")
    return _crd("SpeechRoute", "speechroutes", "sr", schema, {"status": {}}, [
        {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ])


def crds() -> dict[str, dict[str, Any]]:
    """File name -> CRD object, as committed in ``crds/``."""
    return {"speechmodels.yaml": speech_model_crd(), "speechroutes.yaml": speech_route_crd()}


def to_yaml(obj: dict[str, Any]) -> str:
    return "# Generated by `harmony crds` from services/core/contracts/specs.py: do not edit.\n" + \
        yaml.safe_dump(obj, sort_keys=False, width=120)


def openapi_to_jsonschema(node: Any) -> Any:
    """An OpenAPI v3.0 (Kubernetes) schema as a JSON schema for ``jsonschema.Draft4Validator``.

    ``nullable`` becomes a ``null`` type; int-or-string becomes both types. For checking
    custom resources offline the way the API server would (CEL rules aside).
    """
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) if k in ("items", "additionalProperties") else v
           for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if "properties" in out:
        out["properties"] = {k: openapi_to_jsonschema(v) for k, v in node["properties"].items()}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def write_crds(out_dir: str | None = None) -> None:
    """``harmony crds``: print every CRD as one YAML stream, or write one file per CRD into ``out_dir``."""
    if out_dir is None:
        print("---\n".join(to_yaml(obj) for obj in crds().values()), end="")
        return
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for name, obj in crds().items():
        (directory / name).write_text(to_yaml(obj))
