"""The chart's lifecycle: CRDs that `helm upgrade` updates and `helm uninstall` keeps, and a kubeVersion true to
what the templates need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
PROFILES = [None, *sorted((CHART / "ci").glob("*.yaml"))]
CUSTOM = {"harmony.dev", "monitoring.coreos.com", "keda.sh"}


def render(helm: Path, *args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(run(helm, "template", "harmony", str(CHART), "-n", "speech", *args)) if d]


def minimum_version() -> str:
    """Chart.yaml's kubeVersion floor, as major.minor ('>=1.25.0-0' -> '1.25')."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    assert constraint.startswith(">=") and constraint.endswith(".0-0"), constraint
    return constraint[2:].rsplit(".", 1)[0]


def test_no_crds_directory_helm_would_install_once_and_never_upgrade() -> None:
    assert not (CHART / "crds").exists()


def test_crds_are_templates_kept_on_uninstall(helm: Path) -> None:
    """Plain `helm template` (no --include-crds) renders them: they are release objects, so `helm upgrade` applies
    them; `helm.sh/resource-policy: keep` stops `helm uninstall` deleting every SpeechModel with them."""
    crds = [o for o in render(helm) if o["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == ["speechmodels.harmony.dev", "speechroutes.harmony.dev"]
    for crd in crds:
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        kubernetes_validate.validate(crd, minimum_version(), strict=True)


def test_crds_can_be_left_to_someone_else(helm: Path, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"crds": {"install": False}}))
    objects = render(helm, "--values", str(values))
    assert objects and not [o for o in objects if o["kind"] == "CustomResourceDefinition"]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name if p else "defaults")
def test_every_profile_is_valid_at_the_charts_minimum_kubernetes(helm: Path, profile: Path | None) -> None:
    objects = render(helm, *(["--values", str(profile)] if profile else []),
                     "--kube-version", f"v{minimum_version()}.0")
    for obj in objects:
        if obj["apiVersion"].split("/")[0] not in CUSTOM:
            kubernetes_validate.validate(obj, minimum_version(), strict=True)


def test_helm_refuses_an_older_cluster(helm: Path) -> None:
    major, minor = minimum_version().split(".")
    older = f"v{major}.{int(minor) - 1}.0"
    with pytest.raises(AssertionError, match="kubeVersion"):
        render(helm, "--kube-version", older)
