"""Weights on a PersistentVolumeClaim or an OCI image volume, a shared model cache, the spec's own env, and the
thread sizing hint: the SpeechModel fields and the operator's pod template."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from harmony_operator import manifests
from harmony_operator.kube import merge_patch
from harmony_operator.settings import OperatorSettings
from services.core.contracts.crd import crds, openapi_to_jsonschema
from services.core.contracts.specs import SpeechModelSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "speechmodel-weights-volumes.yaml").read_text())
SETTINGS = OperatorSettings()
PLAIN = {"task": "stt", "backend": "faster-whisper", "source": {"path": "/models/whisper"}}


def pod(spec: SpeechModelSpec) -> dict:
    deployment = manifests.deployment("whisper-small", "speech", spec, SETTINGS)
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    return deployment["spec"]["template"]["spec"]


def test_claim_image_and_cache_volumes_in_the_pod() -> None:
    template = pod(SpeechModelSpec.model_validate(EXAMPLE["spec"]))
    volumes = {v["name"]: v for v in template["volumes"]}
    assert volumes["weights"]["persistentVolumeClaim"] == {"claimName": "speech-weights", "readOnly": True}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "harmony-model-cache", "readOnly": False}
    assert volumes["kokoro"]["image"] == {"reference": "registry.example.com/weights/kokoro-v1:int8",
                                          "pullPolicy": "IfNotPresent"}
    assert "cache" not in volumes  # the shared claim replaces the emptyDir
    mounts = {m["mountPath"]: m for m in template["containers"][0]["volumeMounts"]}
    assert mounts["/models"] == {"name": "weights", "mountPath": "/models", "readOnly": True}
    assert mounts["/var/cache/harmony"] == {"name": "model-cache", "mountPath": "/var/cache/harmony", "readOnly": False}
    assert mounts["/weights/kokoro"]["readOnly"] is True
    assert {"/etc/harmony", "/tmp"} <= set(mounts)


def test_without_volumes_the_cache_is_an_emptydir() -> None:
    template = pod(SpeechModelSpec.model_validate(PLAIN))
    volumes = {v["name"]: v for v in template["volumes"]}
    assert set(volumes) == {"config", "cache", "tmp"} and "emptyDir" in volumes["cache"]


def test_sub_path() -> None:
    spec = SpeechModelSpec.model_validate({**PLAIN, "volumes": [
        {"name": "weights", "claim_name": "shared", "mount_path": "/models", "sub_path": "whisper/small"}]})
    mount = next(m for m in pod(spec)["containers"][0]["volumeMounts"] if m["name"] == "weights")
    assert mount["subPath"] == "whisper/small"


def test_env_of_the_spec_follows_and_overrides_the_operators() -> None:
    spec = SpeechModelSpec.model_validate({**PLAIN, "resources": {"cpu": "4"}, "env": [
        {"name": "HARMONY_CACHE_DIR", "value": "/scratch/cache"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]})
    env = pod(spec)["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.count("HARMONY_CACHE_DIR") == 1 and names[-2:] == ["HARMONY_CACHE_DIR", "TOKEN"]
    assert env[-2]["value"] == "/scratch/cache"
    assert env[-1]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}


def test_the_cpu_request_reaches_the_thread_sizing() -> None:
    """A pod with a CPU request and no limit sizes its threads from the request (services/core/runtime/cpus.py);
    a model without one gets the request derived from its backend (harmony_operator.defaults), and the same env."""
    env = {e["name"]: e for e in pod(SpeechModelSpec.model_validate({**PLAIN, "resources": {"cpu": "2500m"}}))
           ["containers"][0]["env"]}
    assert env["HARMONY_CPU_REQUEST"]["valueFrom"] == {"resourceFieldRef": {
        "containerName": "model", "resource": "requests.cpu", "divisor": "1"}}
    plain = pod(SpeechModelSpec.model_validate(PLAIN))["containers"][0]
    assert {e["name"]: e for e in plain["env"]}["HARMONY_CPU_REQUEST"] == env["HARMONY_CPU_REQUEST"]
    assert plain["resources"]["requests"]["cpu"]


def test_user_additions_survive_the_operators_patch() -> None:
    """What the spec adds is in what the operator applies; dropping it from the spec removes it (lists are
    replaced whole), so nothing added to the Deployment by hand is needed, and nothing in the spec is lost."""
    before = manifests.deployment("whisper-small", "speech", SpeechModelSpec.model_validate(EXAMPLE["spec"]), SETTINGS)
    trimmed = copy.deepcopy(EXAMPLE["spec"])
    trimmed["volumes"] = trimmed["volumes"][:1]
    after = manifests.deployment("whisper-small", "speech", SpeechModelSpec.model_validate(trimmed), SETTINGS)
    patch = merge_patch(before, after)
    volumes = [v["name"] for v in patch["spec"]["template"]["spec"]["volumes"]]
    assert volumes == ["config", "cache", "tmp", "weights"]
    env = [e["name"] for e in patch["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "HF_HUB_OFFLINE" in env


@pytest.mark.parametrize("volume, message", [
    ({"name": "w", "mount_path": "/models"}, "exactly one of 'claim_name' or 'image'"),
    ({"name": "w", "mount_path": "/models", "claim_name": "a", "image": "b"}, "exactly one"),
    ({"name": "w", "mount_path": "/models", "image": "b", "read_only": False}, "read-only"),
    ({"name": "w", "mount_path": "/models", "claim_name": "a", "image_pull_policy": "Always"}, "goes with 'image'"),
    ({"name": "cache", "mount_path": "/models", "claim_name": "a"}, "the operator's"),
    ({"name": "w", "mount_path": "/etc/harmony", "claim_name": "a"}, "the operator's"),
    ({"name": "w", "mount_path": "/var/cache/harmony", "image": "x"}, "only be replaced by a claim"),
    ({"name": "w", "mount_path": "models", "claim_name": "a"}, "pattern"),
    ({"name": "W_1", "mount_path": "/m", "claim_name": "a"}, "pattern"),
])
def test_bad_volumes_are_refused(volume: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SpeechModelSpec.model_validate({**PLAIN, "volumes": [volume]})


def test_volume_names_and_paths_are_unique() -> None:
    with pytest.raises(ValidationError, match="unique"):
        SpeechModelSpec.model_validate({**PLAIN, "volumes": [
            {"name": "a", "mount_path": "/m", "claim_name": "x"},
            {"name": "a", "mount_path": "/n", "claim_name": "y"}]})
    with pytest.raises(ValidationError, match="unique"):
        SpeechModelSpec.model_validate({**PLAIN, "volumes": [
            {"name": "a", "mount_path": "/m/", "claim_name": "x"}, {"name": "b", "mount_path": "/m", "image": "y"}]})
    with pytest.raises(ValidationError, match="not both"):
        SpeechModelSpec.model_validate({**PLAIN, "env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {}}}]})


def test_the_crd_takes_volumes_and_env() -> None:
    schema = openapi_to_jsonschema(crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    validator = jsonschema.Draft4Validator(schema)
    validator.validate(EXAMPLE)
    bad = copy.deepcopy(EXAMPLE)
    bad["spec"]["volumes"][0]["mount_path"] = "relative"
    assert not validator.is_valid(bad)


def test_harmony_serve_ignores_them() -> None:
    """The model file a service reads carries them (changing them rolls the pods), and it still parses."""
    from services.core.contracts.specs import NamedModel

    text = manifests.model_file("whisper-small", SpeechModelSpec.model_validate(EXAMPLE["spec"]))
    model = NamedModel.model_validate(yaml.safe_load(text))
    assert [v.name for v in model.volumes] == ["weights", "model-cache", "kokoro"]
