"""Image volumes (oci sources, volumes[].image) need Kubernetes 1.33+: the chart tells the operator whether the
cluster has them (operator.imageVolumes, auto by the cluster's version), and the operator refuses such a model on
a cluster without them instead of making pods that never start."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from harmony_operator import manifests
from harmony_operator.reconcile import kubernetes_problem
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import SpeechModelSpec
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
OCI = SpeechModelSpec.model_validate({"task": "stt", "backend": "faster-whisper",
                                      "source": {"oci": "registry.example.com/models/whisper:1"}})
VOLUME = SpeechModelSpec.model_validate({
    "task": "stt", "backend": "faster-whisper", "source": {"path": "/models/whisper"},
    "volumes": [{"name": "weights", "mount_path": "/models", "image": "registry.example.com/models/whisper:1"}]})
CLAIM = SpeechModelSpec.model_validate({
    "task": "stt", "backend": "faster-whisper", "source": {"path": "/models/whisper"},
    "volumes": [{"name": "weights", "mount_path": "/models", "claim_name": "weights"}]})


def test_image_volumes_need_kubernetes_1_33() -> None:
    """Why the gate exists: the Deployment of an oci source is no valid object before 1.31 (alpha) and 1.33."""
    body = manifests.deployment("m", "speech", OCI, OperatorSettings())
    kubernetes_validate.validate(body, "1.33", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(body, "1.30", strict=True)


@pytest.mark.parametrize("spec", [OCI, VOLUME], ids=["oci-source", "image-volume"])
def test_the_operator_refuses_image_volumes_where_the_cluster_has_none(spec: SpeechModelSpec) -> None:
    off = OperatorSettings(image_volumes=False)
    problem = kubernetes_problem("m", spec, off)
    assert problem is not None and problem.reason == "InvalidSpec" and "1.33" in problem.message
    assert kubernetes_problem("m", spec, OperatorSettings()) is None
    assert kubernetes_problem("m", CLAIM, off) is None  # a claim is no image volume


@pytest.mark.parametrize("value, expected", [("false", False), ("true", True), ("", True)])
def test_settings_read_the_flag(value: str, expected: bool) -> None:
    assert OperatorSettings.from_env({"HARMONY_IMAGE_VOLUMES": value}).image_volumes is expected


def operator_env(helm: Path, tmp_path: Path, kube: str, value: object = None) -> str:
    args = ["template", "harmony", str(CHART), "-n", "speech", "--kube-version", kube]
    if value is not None:
        (tmp_path / "v.yaml").write_text(yaml.safe_dump({"operator": {"imageVolumes": value}}))
        args += ["--values", str(tmp_path / "v.yaml")]
    deployment = next(d for d in yaml.safe_load_all(run(helm, *args))
                      if d and d["kind"] == "Deployment" and d["metadata"]["name"] == "harmony-operator")
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    return env["HARMONY_IMAGE_VOLUMES"]


@pytest.mark.parametrize("kube, value, expected", [
    ("v1.32.0", None, "false"), ("v1.33.0", None, "true"), ("v1.35.2", "auto", "true"),
    ("v1.30.0", True, "true"), ("v1.34.0", False, "false")])
def test_the_chart_sets_it_from_the_clusters_version_or_the_value(helm: Path, tmp_path: Path, kube: str,
                                                                  value: object, expected: str) -> None:
    assert operator_env(helm, tmp_path, kube, value) == expected
