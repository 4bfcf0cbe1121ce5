"""The diarize model's srt and vtt (the engine's extension): one cue per segment, the speaker named (SRT ``A: text``,
a WebVTT voice span ``<v A>text</v>``), parsed strictly and checked against the meeting's turns and words; asked
for with the official openai SDK of the shared `harmony serve`."""

from __future__ import annotations

import base64

import httpx
import pytest

from tests import meetings
from tests.meetings import RATE
from tests.speech import SENTENCES, wav_bytes
from tests.subtitles import check_turns, parse_srt, parse_vtt

MODEL = "gpt-4o-transcribe-diarize"


@pytest.fixture(scope="module")
def meeting() -> tuple[bytes, list[meetings.Turn]]:
    return meetings.two_speaker_meeting()


def test_srt_and_vtt_name_each_cues_speaker(client, meeting):
    audio, turns = meeting
    vtt = client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio), response_format="vtt",
                                             language="en")
    srt = client.audio.transcriptions.create(model=MODEL, file=("meeting.wav", audio), response_format="srt",
                                             language="en")
    assert isinstance(vtt, str) and isinstance(srt, str)
    vtt_cues, srt_cues = parse_vtt(vtt), parse_srt(srt)
    check_turns(vtt_cues, turns)
    check_turns(srt_cues, turns)
    assert [(c.speaker, c.text) for c in vtt_cues] == [(c.speaker, c.text) for c in srt_cues]
    assert all(abs(a.start - b.start) < 0.002 and abs(a.end - b.end) < 0.002 for a, b in zip(vtt_cues, srt_cues))
    assert vtt_cues[-1].end <= (len(audio) - 44) / 2 / RATE + 0.05


def test_a_known_speakers_name_appears_as_given_escaped_in_vtt(harmony, meeting):
    audio, turns = meeting
    name = "Joe <host> & co"
    reference = "data:audio/wav;base64," + base64.b64encode(wav_bytes(meetings.voice("joe", SENTENCES[4]),
                                                                      RATE)).decode()
    answers = {}
    for fmt in ("vtt", "srt"):
        response = httpx.post(harmony.url + "/v1/audio/transcriptions", timeout=300,
                              files={"file": ("meeting.wav", audio)},
                              data={"model": MODEL, "response_format": fmt, "language": "en",
                                    "known_speaker_names[]": [name], "known_speaker_references[]": [reference]})
        assert response.status_code == 200, response.text
        answers[fmt] = response
    assert answers["vtt"].headers["content-type"].startswith("text/vtt")
    assert answers["srt"].headers["content-type"].startswith("text/plain")
    assert "<v Joe &lt;host&gt; &amp; co>" in answers["vtt"].text
    check_turns(parse_vtt(answers["vtt"].text), turns, [name, "A", name, "A"])
    check_turns(parse_srt(answers["srt"].text), turns, [name, "A", name, "A"])
