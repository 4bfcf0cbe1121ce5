"""The chart's model cache claim and Hub mirror (modelCache.*, huggingFace.endpoint): rendered, valid, and
handed to the operator, whose pods then mount the claim (docs/kubernetes.md, "Model sources and the shared cache")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from harmony_operator import manifests
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import SpeechModelSpec
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)
from tests.unit.test_chart import CHART, find, render

HF = SpeechModelSpec.model_validate({"task": "stt", "backend": "faster-whisper",
                                     "source": {"hf": {"repo": "Systran/faster-whisper-small"}}})


def operator_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    container = find(objects, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def test_no_cache_claim_and_no_mirror_by_default(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    assert not find(objects, "PersistentVolumeClaim")
    env = operator_env(objects)
    assert env["HARMONY_CACHE_CLAIM"] == "" and env["HARMONY_HF_ENDPOINT"] == ""
    settings = OperatorSettings.from_env(env)
    volumes = {v["name"]: v for v in manifests.pod_spec("m", HF, settings)["volumes"]}
    assert "emptyDir" in volumes["cache"]  # each pod its own cache


def test_the_chart_creates_the_shared_claim_in_each_served_namespace(helm: Path, tmp_path: Path) -> None:
    values = {"modelCache": {"enabled": True, "size": "250Gi", "storageClassName": "cephfs"},
              "operator": {"watchNamespaces": ["speech", "speech-gpu"]},
              "huggingFace": {"endpoint": "http://hf-mirror.models.svc:8090"}}
    objects = render(helm, tmp_path, values)
    claims = find(objects, "PersistentVolumeClaim")
    assert sorted(c["metadata"]["namespace"] for c in claims) == ["speech", "speech-gpu"]
    for claim in claims:
        kubernetes_validate.validate(claim, "1.33", strict=True)
        assert claim["metadata"]["name"] == "harmony-model-cache"
        assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "cephfs",
                                 "resources": {"requests": {"storage": "250Gi"}}}
    env = operator_env(objects)
    assert env["HARMONY_CACHE_CLAIM"] == "harmony-model-cache"
    assert env["HARMONY_HF_ENDPOINT"] == "http://hf-mirror.models.svc:8090"
    # What the operator then makes of it: every model pod mounts that claim, an hf one's pull points at the mirror.
    pod = manifests.pod_spec("m", HF, OperatorSettings.from_env(env))
    assert {"name": "cache", "persistentVolumeClaim": {"claimName": "harmony-model-cache"}} in pod["volumes"]
    assert {"name": "HF_ENDPOINT", "value": "http://hf-mirror.models.svc:8090"} in pod["initContainers"][0]["env"]


def test_default_storage_class_and_other_access_modes(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {"modelCache": {"enabled": True, "accessModes": ["ReadWriteOnce"]}})
    [claim] = find(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["namespace"] == "speech"
    assert "storageClassName" not in claim["spec"]  # the cluster's default class
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "100Gi"


@pytest.mark.parametrize("enabled", [True, False])
def test_an_existing_claim_is_used_and_none_is_created(helm: Path, tmp_path: Path, enabled: bool) -> None:
    objects = render(helm, tmp_path, {"modelCache": {"enabled": enabled, "existingClaim": "team-weights"}})
    assert not find(objects, "PersistentVolumeClaim")
    assert operator_env(objects)["HARMONY_CACHE_CLAIM"] == "team-weights"


def test_lint_with_the_cache(helm: Path, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("modelCache: {enabled: true}\nhuggingFace: {endpoint: 'http://mirror:8090'}\n"
                    "operator: {clusterWide: true}\n")
    run(helm, "lint", "--strict", str(CHART), "--values", str(path))
    objects = render(helm, tmp_path, {"modelCache": {"enabled": True}, "operator": {"clusterWide": True}})
    assert [c["metadata"]["namespace"] for c in find(objects, "PersistentVolumeClaim")] == ["speech"]
