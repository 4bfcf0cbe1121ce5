"""The web playground in a real headless Chromium (Playwright), against a real `harmony serve`.

Chromium's fake microphone plays a wav of Piper speech with known words, so "Record" records real speech. Every
test also watches the page: no console error, no uncaught exception, no failed request and no 4xx/5xx response.
tests/browser.py finds Chromium, or installs Debian's package when it is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from playwright.sync_api import expect, sync_playwright

from tests.browser import ChromiumUnavailable, Problems, chromium_path, launch_args
from tests.speech import normalize, silence, synthesize, write_wav

pytestmark = pytest.mark.slow
expect.set_options(timeout=120_000)  # a model on a loaded 2-core machine; never reached when things work

SECTIONS = ["Speak", "Transcribe", "Voices", "Look inside", "Batch", "Status"]
MIC_TEXT = "Every morning the baker opens his small shop near the station."
FILE_TEXT = "The quick brown fox jumps over the lazy dog."
VOICE_TEXT = ["Please call Stella and ask her to bring these things with her from the store.",
              "A journey of a thousand miles begins with a single step."]
MIC_RATE = 48000
WAIT_MS = 120_000


def speech_wav(path, texts: list[str], rate: int | None = None, lead_s: float = 0.3, tail_s: float = 0.8):
    parts, source_rate = [], 22050
    for text in texts:
        audio, source_rate = synthesize(text)
        parts += [silence(lead_s, source_rate), audio * 0.8]
    audio = np.concatenate([*parts, silence(tail_s, source_rate)])
    if rate and rate != source_rate:
        audio = soxr.resample(audio, source_rate, rate).astype(np.float32)
    write_wav(path, audio, rate or source_rate)
    return path, len(audio) / (rate or source_rate)


def heard(expected: str, text: str) -> float:
    """The share of the expected words found in ``text`` (any order): tolerant of Whisper's small slips."""
    words, got = set(normalize(expected)), set(normalize(text))
    return len(words & got) / len(words)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playground-audio")
    mic, mic_seconds = speech_wav(folder / "mic.wav", [MIC_TEXT], rate=MIC_RATE, lead_s=0.2, tail_s=0.6)
    upload, _ = speech_wav(folder / "fox.wav", [FILE_TEXT])
    reference, _ = speech_wav(folder / "reference.wav", VOICE_TEXT)
    return {"mic": mic, "mic_seconds": mic_seconds, "upload": upload, "reference": reference}


@pytest.fixture(scope="module")
def browser(audio_files):
    try:
        executable = chromium_path()
    except ChromiumUnavailable as exc:
        pytest.fail(f"the browser tests need Chromium: {exc}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=launch_args(audio_files["mic"]))
        yield browser
        browser.close()


@pytest.fixture
def page(browser, harmony):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["microphone"])
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    problems = Problems()
    problems.watch(page)
    page.goto(harmony.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.problems = problems
    yield page
    context.close()


def test_every_section_has_a_tab_and_fits_a_phone(page, harmony):
    for name in SECTIONS:
        page.get_by_role("tab", name=name).click()
        expect(page.get_by_role("tab", name=name)).to_have_attribute("aria-selected", "true")
        expect(page.get_by_role("tabpanel", name=name)).to_be_visible()
    expect(page.locator("#status-models tr").first).to_be_visible()
    expect(page.locator("#status-ready")).to_contain_text("Ready")
    page.get_by_role("tab", name="Speak").focus()
    page.keyboard.press("ArrowRight")  # the keyboard moves between tabs
    expect(page.get_by_role("tab", name="Transcribe")).to_be_focused()
    expect(page.get_by_role("tabpanel", name="Transcribe")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})
    for name in SECTIONS:
        page.get_by_role("tab", name=name).click()
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{name}: {overflow} px wider than a 390-px phone"
    page.problems.assert_none()


def test_speak_streams_audio_that_plays(page):
    page.get_by_label("Text").fill("Hello from the playground. This is the second sentence.")
    page.get_by_role("button", name="Speak", exact=True).click()
    expect(page.locator("#speak-download")).to_be_visible()
    audio = page.locator("#speak-audio")
    expect(audio).to_have_attribute("data-played", "true")
    assert audio.evaluate("a => a.duration") > 1.0
    curl, sdk = (page.locator("#speak-code pre").nth(i).text_content() for i in (0, 1))
    assert curl.startswith("curl") and "/v1/audio/speech" in curl and "the second sentence" in curl
    assert "client.audio.speech.with_streaming_response.create(" in sdk and 'voice="joe"' in sdk
    page.problems.assert_none()


def test_an_uploaded_file_is_transcribed_with_words_to_follow(page, audio_files):
    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-file").set_input_files(str(audio_files["upload"]))
    page.get_by_role("button", name="Transcribe file").click()
    output = page.locator("#transcribe-output[data-text]")
    expect(output).to_be_attached()
    assert heard(FILE_TEXT, output.get_attribute("data-text")) >= 0.7, output.get_attribute("data-text")
    assert page.locator("#transcribe-words-view span").count() >= 6  # word timestamps, to light up
    page.problems.assert_none()


def test_a_recording_from_the_microphone_is_transcribed(page, audio_files):
    page.get_by_role("tab", name="Transcribe").click()
    record = page.locator("#transcribe-record")
    record.click()
    expect(record).to_have_text("Stop")
    page.wait_for_timeout(audio_files["mic_seconds"] * 1000 + 300)  # one pass of the fake microphone's file
    record.click()
    output = page.locator("#transcribe-output[data-text]")
    expect(output).to_be_attached()
    assert heard(MIC_TEXT, output.get_attribute("data-text")) >= 0.7, output.get_attribute("data-text")
    if page.evaluate("fetch('/playground/features.json').then(r => r.json()).then(f => f.realtime)"):
        live = page.locator("#transcribe-live[data-done]")  # the engine has /v1/realtime: words came while recording
        expect(live).to_be_attached()  # the socket closed: every committed item has its .completed
        assert heard(MIC_TEXT, live.inner_text()) >= 0.5, live.inner_text()
    page.problems.assert_none()


def test_a_registered_voice_appears_in_the_list_and_speaks(page, audio_files):
    page.get_by_role("tab", name="Voices").click()
    page.get_by_label("Name").fill("Playground Stella")
    page.get_by_label("Reference recording").set_input_files(str(audio_files["reference"]))
    page.get_by_role("button", name="Register voice").click()
    row = page.locator("#voices-list tr", has_text="Playground Stella")
    expect(row).to_be_visible()
    expect(page.locator("#voices-figures")).to_contain_text("speech kept")
    row.get_by_role("button", name="Speak in Playground Stella").click()
    expect(page.get_by_role("tabpanel", name="Speak")).to_be_visible()
    assert page.locator("#speak-voice").input_value().startswith("voice_")
    page.problems.assert_none()


def test_look_inside_draws_speech_regions_and_compares_two_recordings(page, audio_files):
    page.get_by_role("tab", name="Look inside").click()
    page.locator("#vad-file").set_input_files(str(audio_files["reference"]))
    page.get_by_role("button", name="Find speech").click()
    expect(page.locator("#vad-summary")).to_contain_text("speech region")
    regions = int(page.locator("#vad-summary").inner_text().split()[0])
    assert 1 <= regions <= 4  # two sentences with a pause between them
    page.get_by_label("Recording A").set_input_files(str(audio_files["reference"]))
    page.get_by_label("Recording B").set_input_files(str(audio_files["upload"]))
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#emb-result")).to_contain_text("cosine similarity")
    similarity = float(page.locator("#emb-result").inner_text().split()[2].rstrip(":"))
    assert similarity > 0.75  # one synthetic speaker (Piper's joe) in both
    # Recording A from the microphone instead (the fake microphone plays Piper's joe too)
    record = page.get_by_role("button", name="Record A")
    record.click()
    expect(record).to_have_text("Stop")
    page.wait_for_timeout(audio_files["mic_seconds"] * 1000 + 300)
    record.click()
    expect(page.locator("#emb-a-rec-state")).to_contain_text("recorded")
    page.locator("#emb-result").evaluate("e => e.textContent = ''")
    page.get_by_role("button", name="Compare").click()
    expect(page.locator("#emb-result")).to_contain_text("cosine similarity")
    recorded = float(page.locator("#emb-result").inner_text().split()[2].rstrip(":"))
    assert recorded > 0.7, recorded
    page.problems.assert_none()


def test_a_batch_of_files_runs_through_the_batch_api(page, audio_files):
    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-files").set_input_files([str(audio_files["upload"]), str(audio_files["mic"])])
    page.get_by_role("button", name="Run batch").click()
    expect(page.locator("#batch-download")).to_be_visible()
    expect(page.locator("#batch-counts")).to_contain_text("completed: 2 done, 0 failed of 2")
    assert page.evaluate("document.querySelector('#batch-overall').value") == 1
    fox = page.locator("#batch-list tr", has_text="fox.wav").inner_text()
    assert heard(FILE_TEXT, fox) >= 0.7, fox
    page.problems.assert_none()
