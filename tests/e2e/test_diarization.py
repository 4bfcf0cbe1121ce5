"""Diarization end to end through the shared `harmony serve`, driven by the official openai SDK: a meeting of two of
the engine's own voices (Piper joe and espeak-ng, seeded) taking turns; speakers, words, known speakers, bad input."""

from __future__ import annotations

import base64
import io
import re

import httpx
import numpy as np
import openai
import pytest
import soundfile
from openai.types.audio import TranscriptionDiarized, TranscriptionTextDoneEvent, TranscriptionTextSegmentEvent

from services.core.audio import resample
from tests import meetings
from tests.meetings import RATE, TURNS
from tests.speech import SENTENCES, silence, synthesize, wav_bytes

MODEL = "gpt-4o-transcribe-diarize"
_voice = meetings.voice


@pytest.fixture(scope="module")
def meeting() -> tuple[bytes, list[meetings.Turn]]:
    """The meeting's WAV and its turns (speaker, start, end, text): tests/meetings.py."""
    return meetings.two_speaker_meeting()


def _data_url(audio: np.ndarray) -> str:
    return "data:audio/wav;base64," + base64.b64encode(wav_bytes(audio, RATE)).decode()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def _labels_by_turn(answer: TranscriptionDiarized, turns) -> list[str]:
    """The label holding most of each turn's segment time."""
    found = []
    for _, start, end, _ in turns:
        time: dict[str, float] = {}
        for s in answer.segments:
            overlap = min(end, s.end) - max(start, s.start)
            if overlap > 0:
                time[s.speaker] = time.get(s.speaker, 0.0) + overlap
        found.append(max(time, key=time.__getitem__) if time else "")
    return found


def test_two_speakers_taking_turns_get_two_labels_and_their_words(client, meeting):
    audio, turns = meeting
    answer = client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio),
                                                response_format="diarized_json", language="en")
    answer = TranscriptionDiarized.model_validate(answer.model_dump(), strict=True)
    assert answer.task == "transcribe" and abs(answer.duration - len(audio[44:]) / 2 / RATE) < 0.1
    assert answer.usage is not None and answer.usage.type == "duration"
    labels = _labels_by_turn(answer, turns)
    assert labels[0] == labels[2] and labels[1] == labels[3] and labels[0] != labels[1], answer.segments
    assert {s.speaker for s in answer.segments} == {"A", "B"}
    assert [s.id for s in answer.segments] == [f"seg_{i}" for i in range(len(answer.segments))]
    for (_who, start, end, text), label in zip(turns, labels):  # each turn's words under its label, mostly
        said = " ".join(s.text for s in answer.segments if s.speaker == label and s.start < end and s.end > start)
        assert len(_words(said) & _words(text)) >= 0.7 * len(_words(text)), (text, said)
    assert len(_words(answer.text) & _words(" ".join(t for _, t in TURNS))) >= 25


def test_streamed_segments_then_done(client, meeting):
    audio, turns = meeting
    stream = client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio),
                                                response_format="diarized_json", stream=True)
    events = list(stream)
    assert events and events[-1].type == "transcript.text.done"
    segments = [TranscriptionTextSegmentEvent.model_validate(e.model_dump(), strict=True) for e in events[:-1]]
    done = TranscriptionTextDoneEvent.model_validate(events[-1].model_dump(exclude_none=True), strict=True)
    assert len(segments) >= 4 and {s.speaker for s in segments} == {"A", "B"}
    assert done.text == " ".join(s.text for s in segments)
    whole = client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio),
                                               response_format="diarized_json")
    # the segments streamed one by one as Whisper's turns came back are the answer's, in order, ids and all
    assert [(s.id, s.speaker, s.start, s.end, s.text) for s in segments] == [
        (s.id, s.speaker, s.start, s.end, s.text) for s in whole.segments]


def test_a_known_speaker_is_named_and_the_other_keeps_a_letter(client, meeting):
    audio, turns = meeting
    reference = _voice("joe", SENTENCES[4])  # joe, saying something else
    answer = client.audio.transcriptions.create(
        model=MODEL, file=("meeting.wav", audio), response_format="diarized_json",
        extra_body={"known_speaker_names": ["joe"], "known_speaker_references": [_data_url(reference)]})
    labels = _labels_by_turn(answer, turns)
    assert labels == ["joe", "A", "joe", "A"], answer.segments


def test_a_reference_that_matches_nobody_leaves_the_labels(harmony, client, meeting):
    audio, turns = meeting
    kokoro = client.audio.speech.create(model="kokoro-ja", voice="kokoro-jf_alpha", response_format="wav",
                                        input="今日はとても良い天気ですね。私は毎朝コーヒーを買います。").content
    reference = "data:audio/wav;base64," + base64.b64encode(kokoro).decode()
    response = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=300, files={"file": ("m.wav", audio)},
                          data={"model": MODEL, "response_format": "diarized_json",
                                "known_speaker_names[]": ["alpha"], "known_speaker_references[]": [reference]})
    assert response.status_code == 200, response.text
    answer = TranscriptionDiarized.model_validate(response.json(), strict=True)
    assert {s.speaker for s in answer.segments} == {"A", "B"}


@pytest.mark.parametrize("fields, param", [
    ({"known_speaker_names[]": ["x"], "known_speaker_references[]": ["not a data url"]}, "known_speaker_references"),
    ({"known_speaker_names[]": ["x"], "known_speaker_references[]": ["data:audio/wav;base64,%%%"]},
     "known_speaker_references"),
    ({"known_speaker_names[]": ["x", "y"], "known_speaker_references[]": ["data:audio/wav;base64,AAAA"]},
     "known_speaker_references"),
    ({"response_format": "verbose_json"}, "response_format"),
    ({"chunking_strategy": '{"type": "semantic"}'}, "chunking_strategy"),
    ({"min_speakers": "3", "max_speakers": "2"}, "min_speakers"),
])
def test_bad_diarization_requests_are_400_naming_the_field(harmony, meeting, fields, param):
    response = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=120,
                          files={"file": ("m.wav", meeting[0])}, data={"model": MODEL, **fields})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_reference_too_short_and_too_many_are_400(client, meeting):
    short = _data_url(synthesize(SENTENCES[0])[0][: RATE])  # one second
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.transcriptions.create(model=MODEL, file=("m.wav", meeting[0]), response_format="diarized_json",
                                           extra_body={"known_speaker_names": ["x"],
                                                       "known_speaker_references": [short]})
    assert error.value.body["param"] == "known_speaker_references" and "2-10 s" in error.value.body["message"]
    five = [_data_url(synthesize(SENTENCES[0])[0])] * 5
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.transcriptions.create(model=MODEL, file=("m.wav", meeting[0]), response_format="diarized_json",
                                           extra_body={"known_speaker_names": list("abcde"),
                                                       "known_speaker_references": five})
    assert error.value.body["param"] == "known_speaker_references"


def test_over_30_s_needs_chunking_strategy_and_diarized_json_needs_the_diarize_model(client, meeting):
    long = wav_bytes(np.concatenate([synthesize(SENTENCES[0])[0], silence(31.0, RATE)]), RATE)
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.transcriptions.create(model=MODEL, file=("m.wav", long), response_format="diarized_json")
    assert error.value.body["param"] == "chunking_strategy"
    answer = client.audio.transcriptions.create(model=MODEL, file=("m.wav", long), response_format="json",
                                                chunking_strategy={"type": "server_vad", "threshold": 0.5,
                                                                   "prefix_padding_ms": 200,
                                                                   "silence_duration_ms": 400})
    assert "fox" in answer.text.lower()
    with pytest.raises(openai.BadRequestError) as error:
        client.audio.transcriptions.create(model="whisper-1", file=("m.wav", meeting[0]),
                                           response_format="diarized_json")
    assert error.value.body["param"] == "response_format"


def test_a_registered_voice_names_its_speaker(harmony, client, meeting):
    audio, turns = meeting
    joe = wav_bytes(np.concatenate([_voice("joe", SENTENCES[4]), _voice("joe", SENTENCES[5])]), RATE)
    registered = httpx.post(harmony.url + "/v1/audio/voices", data={"name": "joe-registered"},
                            files=[("file", ("joe.wav", joe, "audio/wav"))], timeout=180)
    assert registered.status_code == 200, registered.text
    voice = registered.json()["id"]
    try:
        by_id = client.audio.transcriptions.create(
            model=MODEL, file=("meeting.wav", audio), response_format="diarized_json",
            extra_body={"known_speaker_names": ["Joe"], "known_speaker_references": [voice]})
        assert _labels_by_turn(by_id, turns) == ["Joe", "A", "Joe", "A"], by_id.segments
        every = client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio),
                                                   response_format="diarized_json",
                                                   extra_body={"known_speakers": "registered"})
        assert _labels_by_turn(every, turns) == ["joe-registered", "A", "joe-registered", "A"], every.segments
    finally:
        httpx.delete(harmony.url + f"/v1/audio/voices/{voice}", timeout=60)
    with pytest.raises(openai.NotFoundError):  # a voice nobody registered
        client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio), response_format="diarized_json",
                                           extra_body={"known_speaker_names": ["Joe"],
                                                       "known_speaker_references": ["voice_nobody"]})


def test_silence_has_no_segments(client):
    answer = client.audio.transcriptions.create(model=MODEL, file=("quiet.wav", wav_bytes(silence(3.0, RATE), RATE)),
                                                response_format="diarized_json")
    answer = TranscriptionDiarized.model_validate(answer.model_dump(), strict=True)
    assert answer.segments == [] and answer.text == "" and abs(answer.duration - 3.0) < 0.05


JAPANESE_LINE = "来週の会議の資料を金曜日までに準備してください。"


def test_a_bilingual_meeting_keeps_each_speakers_language(client):
    """Whisper decodes each speaker's turn on its own: the Japanese speaker's words come out in Japanese between
    two English turns (one decode of the whole file would hold one language), and ``languages`` is honoured."""
    spoken = client.audio.speech.create(model="tts-1", voice="kokoro-jf_alpha", input=JAPANESE_LINE,
                                        response_format="wav")
    japanese, rate = _wav(spoken.content)
    japanese = resample(japanese, rate, RATE) if rate != RATE else japanese
    parts = [silence(0.5, RATE), synthesize(SENTENCES[0])[0], silence(0.8, RATE), japanese, silence(0.8, RATE),
             synthesize(SENTENCES[2])[0], silence(0.5, RATE)]
    audio = wav_bytes(np.concatenate([p.astype(np.float32) for p in parts]), RATE)
    for extra in ({}, {"extra_body": {"languages": ["en", "ja"]}}):
        answer = client.audio.transcriptions.create(model=MODEL, file=("bilingual.wav", audio),
                                                    response_format="diarized_json", **extra)
        answer = TranscriptionDiarized.model_validate(answer.model_dump(), strict=True)
        kana = [s for s in answer.segments if re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", s.text)]
        english = [s for s in answer.segments if s not in kana]
        assert kana and english, answer.segments
        assert {s.speaker for s in kana}.isdisjoint({s.speaker for s in english}), answer.segments
        assert len(_words(" ".join(s.text for s in english)) & _words(SENTENCES[0] + " " + SENTENCES[2])) >= 10
        assert "金曜日" in "".join(s.text for s in kana) or "会議" in "".join(s.text for s in kana), kana
    refused = httpx.post(f"{client.base_url}audio/transcriptions",
                         files={"file": ("bilingual.wav", audio)},
                         data={"model": MODEL, "response_format": "diarized_json", "language": "fr",
                               "languages[]": ["en", "ja"]}, headers={"Authorization": f"Bearer {client.api_key}"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "language"


def _wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return audio, rate
