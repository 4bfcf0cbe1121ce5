"""The chart's values profiles (charts/harmony/ci/: CPU, GPU, KEDA, ingress): each lints with --strict and renders
objects valid under kubernetes-validate --strict (custom resources against their CRD schema and the pydantic
spec); state lives in Secrets and the object store, never in a pod; the model services sit behind a NetworkPolicy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from services.core.contracts.crd import crds, openapi_to_jsonschema
from services.core.contracts.specs import SpeechModelSpec
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))
SPEECH_MODEL_SCHEMA = openapi_to_jsonschema(
    crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    return {p.name: [d for d in yaml.safe_load_all(run(helm, "template", "harmony", str(CHART), "--namespace",
                                                         "speech", "--include-crds", "--values", str(p))) if d]
            for p in PROFILES}


def find(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def router_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = next(d for d in find(objects, "Deployment") if d["metadata"]["name"].endswith("-router"))
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_the_four_profiles_exist() -> None:
    assert [p.name for p in PROFILES] == ["cpu-values.yaml", "gpu-values.yaml", "ingress-values.yaml",
                                          "keda-values.yaml"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.stem)
def test_lint_strict(helm: Path, profile: Path) -> None:
    run(helm, "lint", "--strict", str(CHART), "--values", str(profile))


@pytest.mark.parametrize("profile", [p.name for p in PROFILES])
def test_every_object_is_valid(rendered, profile: str) -> None:
    objects = rendered[profile]
    assert objects
    for obj in objects:
        group = obj["apiVersion"].split("/")[0]
        if group == "harmony.dev":
            jsonschema.Draft4Validator(SPEECH_MODEL_SCHEMA).validate(obj)
            SpeechModelSpec.model_validate(obj["spec"])  # what the operator will parse
        elif group != "monitoring.coreos.com":  # the ServiceMonitor's CRD is prometheus-operator's
            kubernetes_validate.validate(obj, "1.33", strict=True)


@pytest.mark.parametrize("profile", [p.name for p in PROFILES])
def test_state_comes_from_secrets_and_the_object_store(rendered, profile: str) -> None:
    objects = rendered[profile]
    container = router_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert "secretKeyRef" in env["HARMONY_DATABASE_URL"]["valueFrom"]  # never a URL in the pod spec
    assert env["HARMONY_OBJECT_STORE_REQUIRED"]["value"] == "true"
    assert env["HARMONY_OBJECT_STORE_URL"]["value"].startswith("s3://")
    router_pod = next(d for d in find(objects, "Deployment") if d["metadata"]["name"].endswith("-router"))
    empty_dirs = [v["name"] for v in router_pod["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v]
    assert empty_dirs == ["tmp"]
    operator_env = {e["name"]: e.get("value") for e in
                    next(d for d in find(objects, "Deployment") if d["metadata"]["name"].endswith("-operator"))
                    ["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert operator_env["HARMONY_DATABASE_SECRET"] and operator_env["HARMONY_OBJECT_STORE_URL"].startswith("s3://")
    secrets = {s["metadata"]["name"]: s for s in find(objects, "Secret")}
    if "database:\n  url:" in (CHART / "ci" / profile).read_text():
        assert "harmony-database" in secrets and "harmony-object-store" in secrets
        assert container["envFrom"] == [{"secretRef": {"name": "harmony-object-store"}}]
    else:
        assert not secrets  # existing Secrets, named in the values


@pytest.mark.parametrize("profile", [p.name for p in PROFILES])
def test_model_services_answer_only_the_router_and_prometheus(rendered, profile: str) -> None:
    objects = rendered[profile]
    values = yaml.safe_load((CHART / "ci" / profile).read_text())
    namespaces = values.get("operator", {}).get("watchNamespaces") or ["speech"]
    policies = find(objects, "NetworkPolicy")
    assert sorted(p["metadata"]["namespace"] for p in policies) == sorted(namespaces)
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "harmony-model"}}
        assert spec["policyTypes"] == ["Ingress"]
        router, prometheus = spec["ingress"]
        # the router pods of the release namespace ("speech"), wherever the models are
        assert router["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "speech"}},
                                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "harmony-router"}}}]
        assert prometheus["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name":
                                                                           "monitoring"}
        assert router["ports"] == prometheus["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_the_policy_can_be_turned_off_and_widened(helm: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"networkPolicy": {"enabled": False}}))
    off = [d for d in yaml.safe_load_all(run(helm, "template", "h", str(CHART), "-n", "s", "-f", str(values))) if d]
    assert not find(off, "NetworkPolicy")
    extra = {"from": [{"podSelector": {"matchLabels": {"app": "tracing-agent"}}}], "ports": [{"port": 8080}]}
    values.write_text(yaml.safe_dump({"networkPolicy": {"metrics": {"namespaceSelector": None, "podSelector": None},
                                                        "extraIngress": [extra]}}))
    wide = [d for d in yaml.safe_load_all(run(helm, "template", "h", str(CHART), "-n", "s", "-f", str(values))) if d]
    (policy,) = find(wide, "NetworkPolicy")
    kubernetes_validate.validate(policy, "1.33", strict=True)
    assert len(policy["spec"]["ingress"]) == 2 and policy["spec"]["ingress"][1] == extra  # no Prometheus rule


def test_gpu_profile(rendered) -> None:
    models = {m["metadata"]["name"]: SpeechModelSpec.model_validate(m["spec"])
              for m in find(rendered["gpu-values.yaml"], "SpeechModel")}
    for name in ("whisper-base", "piper-en-joe", "kokoro-ja"):
        assert models[name].device == "cuda" and models[name].resources.gpu == 1
    assert models["whisper-base"].volumes[0].claim_name == "harmony-model-cache"
    assert models["whisper-tiny.en"].resources.gpu == 0  # the rest stay on CPU nodes


def test_keda_and_ingress_profiles(rendered) -> None:
    keda = rendered["keda-values.yaml"]
    (monitor,) = find(keda, "ServiceMonitor")  # the router and every model
    assert monitor["spec"]["selector"]["matchExpressions"][0]["values"] == ["harmony-router", "harmony-model"]
    scaled = {m["metadata"]["name"]: SpeechModelSpec.model_validate(m["spec"]).autoscaling
              for m in find(keda, "SpeechModel")}
    assert scaled["whisper-tiny.en"].engine == scaled["piper-en-joe"].engine == "keda"
    assert scaled["piper-en-joe"].min_replicas == 0
    operator = next(d for d in find(keda, "Deployment") if d["metadata"]["name"].endswith("-operator"))
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["HARMONY_PROMETHEUS_URL"] == "http://prometheus-operated.monitoring.svc:9090"
    (ingress,) = find(rendered["ingress-values.yaml"], "Ingress")
    assert ingress["spec"]["tls"][0]["hosts"] == ["speech.example.com"]
