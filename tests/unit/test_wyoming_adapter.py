"""The Wyoming adapter's pure parts: the info it answers, the choice of model and voice, sentences of a streamed
synthesis, the audio buffer's bounds and formats, and the mDNS record it would register (no network)."""

from __future__ import annotations

import io
import socket
import wave

import numpy as np
import pytest
from wyoming.audio import AudioChunk, AudioStart
from wyoming.tts import SynthesizeVoice

from services.core.contracts.specs import ConfigError, WyomingSettings
from services.serve import wyoming_settings
from services.wyoming.announce import SERVICE_TYPE, announced_address, instance_name, service_info
from services.wyoming.errors import WyomingError
from services.wyoming.info import build_info
from services.wyoming.router_api import ModelEntry, VoiceEntry
from services.wyoming.server import router_connect_url
from services.wyoming.stt import AudioBuffer, base_language, choose_stt_model
from services.wyoming.tts import choose_voice, complete_sentences

WHISPER_LANGS = ["en", "de", "fr", "ja"]
MODELS = [
    ModelEntry(id="whisper-1", task="stt", alias_of="whisper-base", languages=WHISPER_LANGS),
    ModelEntry(id="whisper-base", task="stt", backend="faster-whisper", languages=WHISPER_LANGS),
    ModelEntry(id="whisper-tiny.en", task="stt", backend="faster-whisper", languages=["en"]),
    ModelEntry(id="piper-en-joe", task="tts", backend="piper", languages=["en"]),
    ModelEntry(id="voice-clone", task="tts", pipeline=[{"name": "vad", "model": "silero-vad"}]),
]
VOICES = [
    VoiceEntry(id="joe", model="piper-en-joe", backend="piper", languages=["en"], sample_rate=22050, neural=True),
    VoiceEntry(id="jf_alpha", model="kokoro-ja", backend="kokoro", languages=["ja"], sample_rate=24000, neural=True),
    VoiceEntry(id="espeak-de", model="espeak-ng", backend="espeak", languages=["de"], sample_rate=22050),
    VoiceEntry(id="espeak-en", model="espeak-ng", backend="espeak", languages=["en"], sample_rate=22050),
    VoiceEntry(id="voice_abc", model="voice-clone", backend="clone", languages=[]),
]


def test_info_lists_models_by_own_name_and_voices_with_languages():
    info = build_info(MODELS, VOICES)
    assert [m.name for m in info.asr[0].models] == ["whisper-base", "whisper-tiny.en"]
    assert info.asr[0].models[0].languages == WHISPER_LANGS
    assert [(v.name, v.languages) for v in info.tts[0].voices] == [
        ("joe", ["en"]), ("jf_alpha", ["ja"]), ("espeak-de", ["de"]), ("espeak-en", ["en"])]
    assert info.asr[0].supports_transcript_streaming and info.tts[0].supports_synthesize_streaming
    assert info.event().type == "info"


def test_info_without_models_of_a_task_has_no_program():
    info = build_info([MODELS[3]], [])
    assert info.asr == [] and info.tts == []


@pytest.mark.parametrize(("name", "language", "preferred", "chosen"), [
    (None, "en", None, "whisper-tiny.en"),        # the specialist for the language
    (None, "en-US", None, "whisper-tiny.en"),
    (None, "de", None, "whisper-base"),
    (None, None, None, "whisper-base"),           # no language: the model that can detect it
    ("whisper-1", "de", None, "whisper-base"),    # an alias names its model
    (None, "en", "whisper-base", "whisper-base"),  # the configured model
    ("harmony", "en", None, "whisper-tiny.en"),   # the program's name: no model in particular
])
def test_choose_stt_model(name, language, preferred, chosen):
    assert choose_stt_model(MODELS, name, language, preferred).id == chosen


@pytest.mark.parametrize(("name", "language", "code"), [
    ("nope", None, "unknown_model"), ("piper-en-joe", None, "unknown_model"),
    ("whisper-tiny.en", "de", "unsupported_language"), (None, "xx", "unsupported_language")])
def test_choose_stt_model_refuses(name, language, code):
    with pytest.raises(WyomingError) as caught:
        choose_stt_model(MODELS, name, language)
    assert caught.value.code == code


def test_base_language():
    assert [base_language(x) for x in ("en_US", "EN", "pt-BR", None, "")] == ["en", "en", "pt", None, None]


@pytest.mark.parametrize(("voice", "default", "chosen", "language"), [
    (SynthesizeVoice(name="espeak-de"), None, "espeak-de", None),
    (SynthesizeVoice(language="de"), None, "espeak-de", "de"),
    (SynthesizeVoice(language="en"), None, "joe", "en"),     # neural first
    (SynthesizeVoice(language="ja-JP"), None, "jf_alpha", "ja"),
    (SynthesizeVoice(name="joe", speaker="espeak-en"), None, "espeak-en", None),
    (None, None, "joe", None),
    (None, "espeak-en", "espeak-en", None),
])
def test_choose_voice(voice, default, chosen, language):
    picked, lang = choose_voice(VOICES, voice, default)
    assert (picked.id, lang) == (chosen, language)


@pytest.mark.parametrize(("voice", "code"), [
    (SynthesizeVoice(name="nobody"), "unknown_voice"), (SynthesizeVoice(name="voice_abc"), "unknown_voice"),
    (SynthesizeVoice(name="joe", language="de"), "unsupported_language"),
    (SynthesizeVoice(language="xx"), "unsupported_language")])
def test_choose_voice_refuses(voice, code):
    with pytest.raises(WyomingError) as caught:
        choose_voice(VOICES, voice)
    assert caught.value.code == code


@pytest.mark.parametrize(("buffer", "complete", "rest"), [
    ("The quick brown fo", [], "The quick brown fo"),
    ("Hello there. How are", ["Hello there."], " How are"),
    ("Hello there. ", ["Hello there."], " "),
    ("Hello there.", [], "Hello there."),        # the next chunk may go on ("...there.5")
    ("Ask Dr. ", [], "Ask Dr. "),                # not a sentence end
    ("One! Two? Thr", ["One!", "Two?"], " Thr"),
    ("こんにちは。元気", ["こんにちは。"], "元気"),
    ("", [], ""),
])
def test_complete_sentences(buffer, complete, rest):
    assert complete_sentences(buffer) == (complete, rest)


def _pcm(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()


def test_audio_buffer_converts_to_16_bit_mono_and_makes_a_wav():
    start = AudioStart(rate=16000, width=2, channels=2)
    buffer = AudioBuffer(start, max_seconds=10)
    stereo = np.repeat(np.frombuffer(_pcm(0.5, 16000), "<i2"), 2).tobytes()
    buffer.add(AudioChunk(16000, 2, 2, stereo + b"\1"))  # a partial frame is left out
    assert buffer.seconds == pytest.approx(0.5)
    with wave.open(io.BytesIO(buffer.wav())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (1, 2, 16000, 8000)


def test_audio_buffer_is_bounded():
    buffer = AudioBuffer(AudioStart(rate=16000, width=2, channels=1), max_seconds=1)
    buffer.add(AudioChunk(16000, 2, 1, _pcm(0.8, 16000)))
    with pytest.raises(WyomingError) as caught:
        buffer.add(AudioChunk(16000, 2, 1, _pcm(0.8, 16000)))
    assert caught.value.code == "audio_too_long"
    buffer.add(AudioChunk(16000, 2, 1, _pcm(0.8, 16000)))  # dropped quietly after the one refusal
    assert buffer.seconds == pytest.approx(0.8)


@pytest.mark.parametrize("start", [AudioStart(rate=100, width=2, channels=1), AudioStart(rate=16000, width=5,
                                   channels=1), AudioStart(rate=16000, width=2, channels=0)])
def test_audio_buffer_refuses_formats(start):
    with pytest.raises(WyomingError) as caught:
        AudioBuffer(start, max_seconds=10)
    assert caught.value.code == "bad_audio_format"


def test_zeroconf_record():
    info = service_info("Kitchen Harmony", "192.168.1.20", 10300)
    assert info.type == SERVICE_TYPE == "_wyoming._tcp.local."
    assert info.name == "Kitchen-Harmony._wyoming._tcp.local."
    assert info.port == 10300
    assert info.parsed_addresses() == ["192.168.1.20"]
    assert info.server == "Kitchen-Harmony.local."


def test_zeroconf_default_name_and_address():
    assert instance_name(None) == "harmony-" + socket.gethostname().split(".")[0].replace(" ", "-")
    assert instance_name("a.b c") == "a-b-c"
    assert announced_address("10.1.2.3") == "10.1.2.3"
    assert announced_address("127.0.0.1") == "127.0.0.1"


def test_router_connect_url_for_wildcard_and_unix(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        assert router_connect_url(sock) == f"http://127.0.0.1:{sock.getsockname()[1]}"
    path = str(tmp_path / "router.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
        assert router_connect_url(sock) == "unix:" + path


def test_wyoming_flags_over_the_config():
    settings = wyoming_settings(WyomingSettings(voice="joe"), {"port": 10300, "zeroconf": True})
    assert (settings.port, settings.zeroconf, settings.voice) == (10300, True, "joe")
    with pytest.raises(ConfigError, match="--wyoming-port"):
        wyoming_settings(WyomingSettings(), {"port": 70000})


def test_quiet_tracker_finds_the_end_of_the_sound():
    from services.wyoming.early import QuietTracker

    rate = 16000
    tone = np.frombuffer(_pcm(1.0, rate), "<i2")
    hum = (np.random.default_rng(0).standard_normal(rate // 2) * 3).astype("<i2")  # about -80 dBFS
    pcm = np.concatenate([np.zeros(rate // 4, "<i2"), tone, hum]).tobytes()
    tracker = QuietTracker(rate)
    for offset in range(0, len(pcm), 1000):  # chunks that split frames and samples
        tracker.update(pcm[:offset + 1000])
    frame = tracker.frame  # 20 ms: the end is found to the frame
    assert int(1.25 * rate) <= tracker.loud_end <= int(1.25 * rate) + frame
    assert tracker.quiet_samples == tracker.samples - tracker.loud_end >= int(0.5 * rate) - 2 * frame


def test_quiet_tracker_hears_nothing_in_silence():
    from services.wyoming.early import QuietTracker

    tracker = QuietTracker(16000)
    tracker.update(bytes(32000))
    assert (tracker.loud_end, tracker.quiet_samples) == (0, 0)


def test_audio_buffer_keeps_at_most_48_khz():
    buffer = AudioBuffer(AudioStart(rate=96000, width=2, channels=1), max_seconds=1)
    buffer.add(AudioChunk(96000, 2, 1, _pcm(0.5, 96000)))
    assert buffer.rate == 48000 and buffer.seconds == pytest.approx(0.5, abs=0.01)
