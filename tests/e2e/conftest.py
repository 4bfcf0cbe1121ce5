from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from tests.harmony_process import HarmonyProcess
from tests.models import SEED
from tests.prometheus_server import loaded, prometheus  # noqa: F401 (session fixtures: one for the directory)

SAMPLING_BACKENDS = {"piper", "espeak"}


@pytest.fixture(scope="session")
def harmony(tmp_path_factory):
    """`harmony serve` with the embedded default config, as the README starts it, but with seeded synthesis.

    Piper and espeak-ng sample (durations, noise, variation): with ``options.seed`` the same
    text gives the same audio in every run, so durations and what Whisper hears are stable.
    Whisper's temperature fallback samples too (its per-thread seed cannot pin a request among
    others), so here Whisper decodes greedily; its guards are tested in tests/integration.
    """
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "services/defaults/serve.yaml").read_text())
    for model in config["models"]:
        if model["backend"] in SAMPLING_BACKENDS:
            model["options"] = {**model.get("options", {}), "seed": SEED}
        if model["backend"] == "faster-whisper":  # greedy only: the fallback samples (tests/integration covers it)
            model["options"] = {**model.get("options", {}), "temperature_increment_on_fallback": "none"}
    path = tmp_path_factory.mktemp("harmony") / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    process = HarmonyProcess(config=str(path)).start()
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture(scope="session")
def client(harmony):
    return OpenAI(base_url=harmony.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)
