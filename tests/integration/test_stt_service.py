"""The STT service over loopback with real Whisper models: words, timestamps, batching across requests."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from services.stt.app import create_stt_app
from tests.servers import ServerThread
from tests.speech import (
    GERMAN,
    GERMAN_IN_ENGLISH,
    GERMAN_WORDS,
    SENTENCES,
    espeak,
    normalize,
    silence,
    speech_with_pauses,
    synthesize,
    wav_bytes,
    wer,
)


def post(url: str, audio: bytes, **fields) -> httpx.Response:
    return httpx.post(url + "/v1/audio/transcriptions", files={"file": ("speech.wav", audio, "audio/wav")},
                      data={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()},
                      timeout=120)


def test_transcribes_known_words_with_each_model(stt_service):
    audio, rate = synthesize(SENTENCES[0])
    for model in ("whisper-base", "whisper-tiny.en"):
        response = post(stt_service.url, wav_bytes(audio, rate), model=model)
        assert response.status_code == 200, response.text
        body = response.json()
        assert wer(SENTENCES[0], body["text"]) <= 0.2, body["text"]  # at most one word of nine wrong
        assert body["language"] == "en"
        assert abs(body["duration"] - len(audio) / rate) < 0.05


def test_long_audio_is_cut_into_windows_and_keeps_order(stt_service):
    texts = SENTENCES * 2  # about 45 s: two or more 30-second windows
    audio, rate = speech_with_pauses(texts, pause_s=1.0)
    assert len(audio) / rate > 35
    body = post(stt_service.url, wav_bytes(audio, rate), model="whisper-tiny.en").json()
    assert wer(" ".join(texts), body["text"]) <= 0.15, body["text"]
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts)
    assert body["segments"][-1]["end"] > 30.0
    assert body["segments"][-1]["end"] <= len(audio) / rate + 0.5


def test_stream_sends_one_line_per_segment_then_the_result(stt_service):
    audio, rate = speech_with_pauses(SENTENCES * 2, pause_s=1.0)
    with httpx.stream("POST", stt_service.url + "/v1/audio/transcriptions",
                      files={"file": ("a.wav", wav_bytes(audio, rate))},
                      data={"model": "whisper-tiny.en", "stream": "true"}, timeout=120) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line.strip()]
    kinds = [line["type"] for line in lines]
    assert kinds[-1] == "done" and kinds.count("segment") >= 2 and "error" not in kinds
    streamed = "".join(line["segment"]["text"] for line in lines if line["type"] == "segment")
    assert streamed.strip() == lines[-1]["result"]["text"]


def test_word_timestamps_follow_the_speech(stt_service):
    first, rate = synthesize(SENTENCES[0])
    audio = np.concatenate([silence(2.0, rate), first])
    body = post(stt_service.url, wav_bytes(audio, rate), model="whisper-base", word_timestamps=True).json()
    words = body["words"]
    assert wer(SENTENCES[0], " ".join(w["word"] for w in words)) <= 0.2
    assert words[0]["word"].strip().lower() == "the"
    assert 1.3 <= words[0]["start"] <= 2.6  # speech starts at 2.0 s; Whisper word timing is within a few hundred ms
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    assert words[-1]["end"] <= len(audio) / rate + 0.2


def test_vad_filter_skips_leading_silence(stt_service):
    speech, rate = synthesize(SENTENCES[1])
    audio = np.concatenate([silence(6.0, rate), speech, silence(3.0, rate)])
    body = post(stt_service.url, wav_bytes(audio, rate), model="whisper-tiny.en", vad_filter=True).json()
    assert wer(SENTENCES[1], body["text"]) <= 0.15, body["text"]
    assert body["segments"][0]["start"] >= 5.0


def test_language_detection_and_translation_with_multilingual_model(stt_service):
    audio, rate = espeak(GERMAN, "de")  # seeded espeak-ng: the same audio in every run
    heard = post(stt_service.url, wav_bytes(audio, rate), model="whisper-base").json()
    assert heard["language"] == "de", heard
    assert len(GERMAN_WORDS & set(normalize(heard["text"]))) >= 4, heard["text"]
    translated = post(stt_service.url, wav_bytes(audio, rate), model="whisper-base", task="translate").json()
    words = set(normalize(translated["text"]))
    assert len(GERMAN_IN_ENGLISH & words) >= 3, translated["text"]
    assert not GERMAN_WORDS & words, translated["text"]


def test_english_only_model_refuses_translation(stt_service):
    audio, rate = synthesize(SENTENCES[3])
    refused = post(stt_service.url, wav_bytes(audio, rate), model="whisper-tiny.en", task="translate")
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "unsupported_task"


def test_concurrent_requests_share_batches(stt_service):
    """Windows of concurrent requests decode in one batched call: the batch-size histogram shows it.

    Which clips share a batch (and a packed window) depends on when each request arrives, and Whisper tiny.en
    hears an ambiguous first word differently beside other clips (packing's measured cost, docs/benchmarks.md):
    over every batch and pack these four clips can form, "Please call Stella" is at worst "A place called
    Stella and asked her" (WER 0.27), and every other clip within 0.1. So each answer is its own sentence,
    within 0.3, whatever the batches were."""
    def batch_totals():
        text = httpx.get(stt_service.url + "/metrics").text
        values = {}
        for line in text.splitlines():
            if line.startswith("harmony_batch_size_") and 'model="whisper-tiny.en"' in line:
                name = line.split("{")[0]
                values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return values.get("harmony_batch_size_count", 0.0), values.get("harmony_batch_size_sum", 0.0)

    count0, sum0 = batch_totals()
    clips = [wav_bytes(*synthesize(text)) for text in SENTENCES[:4]]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda clip: post(stt_service.url, clip, model="whisper-tiny.en"), clips))
    for text, response in zip(SENTENCES, responses):
        assert response.status_code == 200
        heard = response.json()["text"]
        assert wer(text, heard) <= 0.3, heard
        assert min(SENTENCES[:4], key=lambda other: wer(other, heard)) == text, heard
    count1, sum1 = batch_totals()
    items, batches = sum1 - sum0, count1 - count0
    assert items == 4
    assert batches < 4, f"4 concurrent requests ran in {batches} batches: no batching across requests"


def test_bad_input_is_a_clear_400(stt_service):
    assert post(stt_service.url, b"not audio at all", model="whisper-base").json()["error"]["code"] == "invalid_audio"
    assert post(stt_service.url, b"", model="whisper-base").status_code == 400
    response = post(stt_service.url, wav_bytes(*synthesize("Hi.")), model="whisper-base", temperature="hot")
    assert response.status_code == 400 and response.json()["error"]["param"] == "temperature"
    response = post(stt_service.url, wav_bytes(*synthesize("Hi.")), model="whisper-tiny.en", language="de")
    assert response.status_code == 400 and response.json()["error"]["param"] == "language"


def test_health_ready_and_metrics(stt_service, config):
    assert httpx.get(stt_service.url + "/healthz").status_code == 200
    ready = httpx.get(stt_service.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == {"whisper-base": "ready",
                                                                   "whisper-tiny.en": "ready"}
    # a fresh service: every series of each model it serves is there before any request, at zero (dashboards and
    # alerts see them from the start; a rate of an absent series is no data)
    tiny = [model for model in config.models if model.name == "whisper-tiny.en"]
    with ServerThread(create_stt_app(tiny, config.server.max_upload_bytes)) as fresh:
        text = httpx.get(fresh.url + "/metrics").text
    samples = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset({"model": "whisper-tiny.en", **labels}.items())))

    for name in ("harmony_queue_depth", "harmony_in_flight_requests", "harmony_batch_size_count",
                 "harmony_queue_wait_seconds_count", "harmony_inference_seconds_count", "harmony_audio_seconds_total",
                 "harmony_abandoned_items_total", "harmony_stt_packed_windows_total",
                 "harmony_stt_pack_fallbacks_total"):
        assert value(name) == 0, name
    assert value("harmony_batch_size_bucket", le="+Inf") == value("harmony_inference_seconds_bucket", le="1.0") == 0
    assert value("harmony_requests_total", component="stt", outcome="ok") == 0
    assert value("harmony_requests_total", component="stt", outcome="error") == 0
    assert value("harmony_model_ready") == 1  # the alert HarmonyModelNotReady reads it
    assert value("harmony_queue_capacity") == 64  # HarmonyQueueSaturated reads it
    assert (value("harmony_model_load_seconds") or 0) > 0
