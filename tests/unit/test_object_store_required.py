"""In a pod (HARMONY_OBJECT_STORE_REQUIRED), nothing is kept in the pod's own directory: the Files and Batch API
answer 503 naming the missing setting and the batch runner stays off; the voice service refuses to start."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from services.core.contracts.specs import ConfigError, HarmonyConfig, NamedModel
from services.router.app import create_router_app
from services.router.routing import ModelTable


@pytest.fixture
def in_a_pod(monkeypatch):
    monkeypatch.delenv("HARMONY_OBJECT_STORE_URL", raising=False)
    monkeypatch.setenv("HARMONY_OBJECT_STORE_REQUIRED", "true")


def test_files_api_without_a_shared_object_store_is_503(in_a_pod, tmp_path, caplog):
    app = create_router_app(HarmonyConfig(data_dir=str(tmp_path)), ModelTable())
    with caplog.at_level(logging.WARNING, logger="harmony.batches"), TestClient(app) as client:
        response = client.post("/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"})
        listing = client.get("/v1/files")
    for answer in (response, listing):
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "object_store_missing" and "voices.objectStore.url" in error["message"]
    assert "the batch runner does not run" in caplog.text
    assert not app.state.batch_runner.tasks
    assert not (tmp_path / "objects").exists()  # nothing written to the pod's disk


def test_files_api_with_an_object_store_works_in_a_pod(in_a_pod, tmp_path, monkeypatch):
    monkeypatch.setenv("HARMONY_OBJECT_STORE_URL", str(tmp_path / "shared"))  # a directory stands in for S3
    app = create_router_app(HarmonyConfig(data_dir=str(tmp_path / "data")), ModelTable())
    with TestClient(app) as client:
        response = client.post("/v1/files", files={"file": ("in.jsonl", b"{}\n")}, data={"purpose": "batch"})
        assert app.state.batch_runner.tasks
    assert response.status_code == 200, response.text
    assert list((tmp_path / "shared").rglob("*")) != []


def test_voice_service_refuses_to_start(in_a_pod, tmp_path):
    from services.vc.app import open_voice_store

    spec = NamedModel.model_validate({"name": "world-vc", "task": "vc", "backend": "world",
                                      "source": {"package": "pyworld-prebuilt"}})
    with pytest.raises(ConfigError, match="registered voices need an object store"):
        open_voice_store(spec, HarmonyConfig(data_dir=str(tmp_path)))
