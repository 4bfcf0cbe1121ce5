"""The operator -> router contract (the models ConfigMap), and the pods' entry points."""

from __future__ import annotations

from pathlib import Path

import pytest

from harmony_operator import manifests, names
from services.core.contracts.errors import ModelNotFound
from services.core.contracts.specs import NamedRoute, SpeechModelSpec, Task
from services.router.cluster.config_map import ClusterSync
from services.router.routing import ModelTable
from services.serve import default_config
from services.service_main import build_app, load_model
from services.service_main import main as service_main

ROUTE = NamedRoute.model_validate({"name": "transcribe-en", "task": "stt",
                                   "steps": [{"name": "stt", "task": "stt", "model": "whisper-tiny.en"}]})


def write_router_file(path: Path, models, routes) -> None:
    path.write_text(manifests.router_configmap("speech", models, routes)["data"][names.ROUTER_CONFIG_KEY])


def test_router_table_follows_the_operator_configmap(tmp_path: Path) -> None:
    models = default_config().models
    path = tmp_path / "models.yaml"
    table = ModelTable()
    sync = ClusterSync(table, path)

    assert sync.reload()  # no file yet: no models, and no error
    assert table.models == {}

    write_router_file(path, models, [ROUTE])
    assert sync.reload()
    assert set(table.models) == {m.name for m in models} >= {"whisper-base", "whisper-tiny.en"}
    assert table.resolve("whisper-1", Task.stt).name == "whisper-base"
    assert [r.url for r in table.models["whisper-tiny.en"].replicas] == \
        [names.endpoint("whisper-tiny.en", "speech")]
    assert set(table.routes) == {"transcribe-en"}
    assert table.models["whisper-base"].spec == next(m for m in models if m.name == "whisper-base")
    assert not sync.reload()  # unchanged file: nothing to do

    rest = [m for m in models if m.name != "whisper-base"]
    write_router_file(path, rest, [])
    assert sync.reload()
    assert set(table.models) == {m.name for m in rest} and table.routes == {}
    with pytest.raises(ModelNotFound):
        table.resolve("whisper-1", Task.stt)

    path.write_text("models: [{name: broken}]\n")  # no endpoint, no spec: ignored, the table stays
    assert not sync.reload()
    assert set(table.models) == {m.name for m in rest}


def test_model_file_round_trip(tmp_path: Path) -> None:
    model = next(m for m in default_config().models if m.name == "whisper-base")
    spec = SpeechModelSpec.model_validate(model.model_dump(exclude={"name"}))
    path = tmp_path / "model.yaml"
    path.write_text(manifests.model_file(model.name, spec))
    assert load_model(path) == model


def test_service_main_builds_the_task_app_without_loading(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    tiny = next(m for m in default_config().models if m.name == "whisper-tiny.en")
    client = TestClient(build_app(tiny))  # no lifespan: the model is not loaded
    assert client.get("/healthz").status_code == 200
    readyz = client.get("/readyz")
    assert readyz.status_code == 503 and readyz.json()["models"] == {"whisper-tiny.en": "loading"}


def test_service_main_refuses_a_bad_model_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "model.yaml"
    path.write_text("name: x\ntask: stt\nbackend: nope\nsource: {package: p}\n")
    assert service_main(["--model-file", str(path)]) == 2
    assert "unknown stt backend 'nope'" in capsys.readouterr().err
    path.write_text("name: x\ntask: stt\n")
    assert service_main(["--model-file", str(path)]) == 2
    assert "backend" in capsys.readouterr().err
