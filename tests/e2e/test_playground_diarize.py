"""The playground's diarized transcript in a real headless Chromium (Playwright), against the shared `harmony serve`.

A two-speaker meeting (tests/meetings.py: Piper joe and espeak-ng taking four turns) is uploaded in the Transcribe
section with the diarize model; the answer is a timeline of speakers (a lane per speaker, a block per segment) and
speaker-labelled paragraphs; a block or a paragraph plays the audio from its segment's start. The page is watched as
in tests/e2e/test_playground.py (its fixtures): no console error, no failed request, no 4xx/5xx answer.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from tests import meetings
from tests.e2e.test_playground import audio_files, browser, heard, page  # noqa: F401 (fixtures)
from tests.speech import SENTENCES, wav_bytes

pytestmark = pytest.mark.slow
MODEL = "gpt-4o-transcribe-diarize"
BLOCKS = """() => [...document.querySelectorAll('#transcribe-diarized .block')].map(b => ({
  id: b.dataset.id, speaker: b.dataset.speaker, start: +b.dataset.start, end: +b.dataset.end,
  lane: b.closest('.lane').dataset.speaker, x: b.getBoundingClientRect().left}))"""


@pytest.fixture(scope="module")
def meeting_file(tmp_path_factory):
    audio, turns = meetings.two_speaker_meeting()
    path = tmp_path_factory.mktemp("meeting") / "meeting.wav"
    path.write_bytes(audio)
    return path, turns


def _diarize(page, path, stream: bool = False, known: bool = False) -> list[dict]:
    """Upload ``path`` in the Transcribe section with the diarize model; the timeline's blocks, by start."""
    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-model").select_option(MODEL)
    expect(page.locator("#transcribe-format")).to_have_value("diarized_json")  # the default for this model
    expect(page.get_by_label("Min speakers")).to_be_visible()
    expect(page.get_by_label("Word timestamps (verbose_json)")).to_be_hidden()  # Whisper's, not this model's
    page.locator("#transcribe-file").set_input_files(str(path))
    page.get_by_label("Max speakers").fill("4")
    page.get_by_label("Stream segments as they are ready").set_checked(stream)
    page.get_by_label("Known speakers: my registered voices").set_checked(known)
    page.get_by_role("button", name="Transcribe file").click()
    expect(page.locator("#transcribe-diarized[data-done]")).to_be_attached()
    return sorted(page.evaluate(BLOCKS), key=lambda b: b["start"])


def _runs(blocks: list[dict]) -> list[str]:
    """The speakers in order of time, consecutive blocks of one speaker as one turn."""
    runs: list[str] = []
    for block in blocks:
        if not runs or runs[-1] != block["speaker"]:
            runs.append(block["speaker"])
    return runs


def _by_turn(blocks: list[dict], turns) -> list[str]:
    """The speaker holding most of each known turn's time."""
    found = []
    for _, start, end, _ in turns:
        time: dict[str, float] = {}
        for b in blocks:
            time[b["speaker"]] = time.get(b["speaker"], 0.0) + max(0.0, min(end, b["end"]) - max(start, b["start"]))
        found.append(max(time, key=time.__getitem__))
    return found


def _paragraphs(page) -> list[tuple[str, float, str]]:
    return [(p["speaker"], p["start"], p["text"]) for p in page.evaluate(
        "() => [...document.querySelectorAll('#transcribe-diarized .turns p')].map(p => ({speaker: p.dataset.speaker,"
        " start: +p.dataset.start, text: p.querySelector('.said').textContent}))")]


def _now(page) -> float:
    return page.locator("#transcribe-audio").evaluate("a => a.currentTime")


def test_a_meeting_is_a_timeline_of_two_speakers_taking_turns(page, meeting_file):
    path, turns = meeting_file
    blocks = _diarize(page, path)
    lanes = page.locator("#transcribe-diarized .lane")
    expect(lanes).to_have_count(2)
    names = [lanes.nth(i).get_attribute("data-speaker") for i in range(2)]
    assert names == ["A", "B"], names  # lanes in order of first speech; OpenAI's letters when nobody is known
    expect(page.locator("#transcribe-diarized .legend li")).to_have_text(names)
    assert all(b["lane"] == b["speaker"] for b in blocks)
    assert _runs(blocks) == ["A", "B", "A", "B"], blocks
    assert _by_turn(blocks, turns) == ["A", "B", "A", "B"], blocks
    assert [b["x"] for b in blocks] == sorted(b["x"] for b in blocks)  # placed by time, left to right
    paragraphs = _paragraphs(page)
    assert [p[0] for p in paragraphs] == ["A", "B", "A", "B"], paragraphs
    for (_, _, _, said), (_, _, text) in zip(turns, paragraphs):
        assert heard(said, text) >= 0.6, (said, text)  # espeak-ng is robotic: Whisper slips on a word or two
    curl, sdk = (page.locator("#transcribe-code pre").nth(i).text_content() for i in (0, 1))
    assert "response_format=diarized_json" in curl and "chunking_strategy=auto" in curl and "max_speakers=4" in curl
    assert 'response_format="diarized_json"' in sdk and '"max_speakers": 4' in sdk and "segment.speaker" in sdk
    page.problems.assert_none()


def test_a_block_or_a_paragraph_plays_the_audio_from_its_start(page, meeting_file):
    path, _ = meeting_file
    blocks = _diarize(page, path)
    third = page.locator(f"#transcribe-diarized .block[data-id='{blocks[2]['id']}']")
    page.wait_for_function(  # the file is local and preloaded: once all of it is in, a seek fetches nothing
        "() => { const a = document.querySelector('#transcribe-audio');"
        " return a.buffered.length && a.buffered.end(a.buffered.length - 1) >= a.duration - 0.05; }")
    third.focus()
    page.keyboard.press("Enter")  # blocks are buttons: the keyboard reaches them
    now = _now(page)
    assert blocks[2]["start"] - 0.05 <= now <= blocks[2]["start"] + 1.0, (now, blocks[2])
    speaker, start, _ = _paragraphs(page)[1]
    page.locator("#transcribe-diarized .turns p").nth(1).click()
    now = _now(page)
    assert speaker == "B" and start - 0.05 <= now <= start + 1.0, (now, start)
    page.problems.assert_none()


def test_streamed_segments_and_a_registered_voice_name_the_lanes(page, harmony, meeting_file):
    path, turns = meeting_file
    joe = wav_bytes(np.concatenate([meetings.voice("joe", SENTENCES[4]), meetings.voice("joe", SENTENCES[5])]),
                    meetings.RATE)
    registered = httpx.post(harmony.url + "/v1/audio/voices", data={"name": "Playground Joe"},
                            files=[("file", ("joe.wav", joe, "audio/wav"))], timeout=180)
    assert registered.status_code == 200, registered.text
    try:
        blocks = _diarize(page, path, stream=True, known=True)
        owned = {v["name"] for v in httpx.get(harmony.url + "/v1/audio/voices", timeout=60).json()["data"]}
    finally:
        httpx.delete(harmony.url + f"/v1/audio/voices/{registered.json()['id']}", timeout=60)
    joe_name, other = _by_turn(blocks, turns)[:2]
    assert _by_turn(blocks, turns) == [joe_name, other, joe_name, other], blocks
    assert joe_name in owned and other == "A", blocks  # joe named by a registered voice (of joe), espeak a letter
    expect(page.locator("#transcribe-diarized .legend li")).to_have_text([joe_name, "A"])
    assert page.locator("#transcribe-output").get_attribute("data-text").strip()
    curl, sdk = (page.locator("#transcribe-code pre").nth(i).text_content() for i in (0, 1))
    assert "known_speakers=registered" in curl and "stream=true" in curl and curl.startswith("curl -sN")
    assert "stream=True" in sdk and '"known_speakers": "registered"' in sdk and "transcript.text.segment" in sdk
    page.problems.assert_none()
