"""``harmony serve --model <Hugging Face id>`` with the official openai SDK: models fetched from a Hub mirror on
loopback (olah), task and backend read from their files, served under OpenAI's names."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from openai import OpenAI

from tests.harmony_process import HarmonyProcess
from tests.hub_mirror import PIPER, TINY
from tests.speech import synthesize, wav_bytes, wer

ROOT = Path(__file__).resolve().parents[2]
TEXT = "Please send the quarterly report to the finance team before Friday."


@pytest.fixture(scope="module")
def served(hub_mirror, tmp_path_factory):
    env = {**hub_mirror.env(), "HARMONY_CACHE_DIR": str(tmp_path_factory.mktemp("byom-cache"))}
    process = HarmonyProcess(extra_args=["--model", TINY, "--model", f"{PIPER}:en_US-joe-medium"], env=env).start()
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture(scope="module")
def client(served):
    return OpenAI(base_url=served.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)


def test_models_named_on_the_command_line_are_the_ones_served(client):
    ids = {model.id for model in client.models.list().data}
    assert {"faster-whisper-tiny.en", "whisper-1", "en-us-joe-medium", "tts-1"} <= ids
    assert "whisper-base" not in ids and "piper-joe" not in ids  # the embedded default's models are not served


def test_a_hub_whisper_transcribes(client):
    audio, rate = synthesize(TEXT)
    result = client.audio.transcriptions.create(model="whisper-1", file=("report.wav", wav_bytes(audio, rate)),
                                                temperature=0.0)
    assert wer(TEXT, result.text) <= 0.1, result.text


def test_a_hub_piper_voice_speaks(client):
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav")
    audio, rate = sf.read(io.BytesIO(speech.content))
    assert rate == 22050 and 2.5 < len(audio) / rate < 8.0


def test_a_model_that_cannot_be_fetched_stops_serve_with_a_clear_message(hub_mirror, tmp_path):
    env = {**hub_mirror.env(), "HARMONY_CACHE_DIR": str(tmp_path)}
    import os

    done = subprocess.run([sys.executable, "-m", "services.cli", "serve", "--model", "nobody/nothing", "--port", "0"],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--model: hf://nobody/nothing@main" in done.stderr and "repository not found" in done.stderr


def test_a_config_of_hub_models_is_fetched_with_a_bar_then_serves_offline(hub_mirror, tmp_path):
    import yaml

    from tests.servers import dead_url

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"models": [{
        "name": "whisper-hub", "task": "stt", "backend": "faster-whisper", "aliases": ["whisper-1"],
        "source": {"hf": {"repo": TINY, "revision": "v1"}}, "languages": ["en"]}]}))
    env = {**hub_mirror.env(), "HARMONY_CACHE_DIR": str(tmp_path / "cache")}
    online = HarmonyProcess(config=str(config), env=env).start()
    try:
        assert f"hf://{TINY}@v1 @ {hub_mirror.commits[TINY][0][:12]}" in online.output()
    finally:
        assert online.stop() == 0, online.output()
    with dead_url() as nowhere:  # the Hub gone, and offline mode on: the cache alone serves
        offline = HarmonyProcess(config=str(config), env={**env, "HF_ENDPOINT": nowhere, "HARMONY_OFFLINE": "1"})
        offline.start()
        try:
            client = OpenAI(base_url=offline.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)
            audio, rate = synthesize(TEXT)
            text = client.audio.transcriptions.create(model="whisper-1", file=("r.wav", wav_bytes(audio, rate)),
                                                      temperature=0.0).text
            assert wer(TEXT, text) <= 0.1, text
        finally:
            assert offline.stop() == 0, offline.output()
