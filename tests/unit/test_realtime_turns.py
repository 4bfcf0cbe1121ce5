"""The pure parts of a realtime session: turn detection, the audio timeline, deltas, session settings; and a live
stream's Silero VAD state carried between calls giving the probabilities of one pass."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.contracts.specs import NamedModel
from services.core.tasks.jobs import VadContinuation, VadContinued
from services.router.realtime.config import SessionConfig
from services.router.realtime.events import RealtimeError, parse_client_event, pcm16_of
from services.router.realtime.models import DeltaText
from services.router.realtime.turns import AudioTimeline, TurnDetector
from tests.speech import SENTENCES, synthesize


def test_turns_follow_server_vad_rules():
    # frames of 32 ms; silence 192 ms (6 frames), so a pause is reported after 96 ms (3 frames) of quiet
    detector = TurnDetector(threshold=0.5, prefix_padding_ms=64, silence_duration_ms=192, frame_samples=512)
    probs = [0.1] * 4 + [0.9] * 6 + [0.2] * 2 + [0.9] * 2 + [0.2] * 4 + [0.8] * 2 + [0.1] * 6 + [0.4] * 3
    events = detector.feed(0, probs)
    kinds = [(e.kind, e.at) for e in events]
    assert kinds == [("start", 4 * 512 - 1024),  # a quiet of 2 frames: nothing
                     ("pause", 17 * 512), ("resume", 18 * 512), ("pause", 23 * 512), ("stop", 26 * 512)]
    assert not detector.speaking


def test_a_turn_never_starts_before_the_floor_and_probabilities_between_thresholds_hold():
    detector = TurnDetector(threshold=0.5, prefix_padding_ms=300, silence_duration_ms=100, frame_samples=512)
    events = detector.feed(10_000, [0.9, 0.45, 0.45, 0.45, 0.45], floor=9_000)
    assert [(e.kind, e.at) for e in events] == [("start", 9_000)]  # 0.45 is neither speech nor silence


def test_timeline_keeps_indices_after_dropping():
    timeline = AudioTimeline()
    timeline.append(np.arange(1000, dtype=np.float32))
    timeline.append(np.arange(1000, 1500, dtype=np.float32))
    timeline.drop_before(600)
    assert (timeline.start, timeline.end) == (600, 1500)
    assert timeline.slice(0, 700).tolist() == list(range(600, 700))
    assert timeline.slice(1400, 2000).tolist() == list(range(1400, 1500))
    timeline.drop_before(5000)
    assert timeline.start == timeline.end == 1500 and timeline.slice(0, 9999).size == 0


def test_deltas_extend_what_went_out_and_never_contradict_it():
    deltas = DeltaText()
    assert deltas.next("Please call") == "Please"
    assert deltas.next("Please call Stella and") == " call Stella"
    assert deltas.next("Please, call Stella and ask her") == " and ask"  # punctuation and case do not count
    assert deltas.next("Please fall Stella and ask her to") is None  # a rewrite of sent words: nothing more
    assert deltas.next("one") is None


def test_session_update_shapes():
    config = SessionConfig()
    config.update({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}, "transcription": {"model": "whisper-1", "language": "en"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300, "create_response": True}}}}})
    assert config.sample_rate == 16000 and config.transcription.language == "en"
    assert config.turn_detection.silence_duration_ms == 300
    config.update({"type": "transcription_session.update", "session": {"turn_detection": None}})
    assert config.turn_detection is None and config.sample_rate == 16000
    with pytest.raises(RealtimeError) as bad:
        config.update({"type": "session.update", "event_id": "x", "session": {
            "type": "transcription", "audio": {"input": {"turn_detection": {"silence_duration_ms": "500"}}}}})
    assert bad.value.param == "session.audio.input.turn_detection.silence_duration_ms" and bad.value.event_id == "x"
    assert config.turn_detection is None  # a refused update changes nothing


@pytest.mark.parametrize("message, code", [
    ("{", "invalid_json"), ("[]", "invalid_json"), ('{"type": 3}', "missing_required_parameter"),
    ('{"type": "conversation.item.create"}', "invalid_value"), ('{"type": "x", "event_id": 5}', "invalid_value"),
])
def test_bad_client_events(message, code):
    with pytest.raises(RealtimeError) as bad:
        parse_client_event(message)
    assert bad.value.code == code


def test_append_audio_must_be_base64_of_whole_samples():
    assert pcm16_of({"audio": "AAA="}) == b"\x00\x00"
    for audio in ("AAAA", "**", 5):
        with pytest.raises(RealtimeError):
            pcm16_of({"audio": audio})


@pytest.mark.slow
def test_a_stream_in_pieces_gets_the_probabilities_of_one_pass():
    import soxr

    from services.vad.backends.silero import SileroVadBackend

    backend = SileroVadBackend(NamedModel.model_validate({"name": "silero-vad", "task": "vad", "backend": "silero",
                                                          "source": {"package": "silero-vad"}}))
    backend.load()
    speech, rate = synthesize(SENTENCES[0])
    audio = soxr.resample(np.concatenate([np.zeros(rate // 2, np.float32), speech]), rate, 16000).astype(np.float32)
    audio = audio[:len(audio) // 512 * 512]
    whole = backend.run_batch([audio])[0]
    state, pieces = None, []
    for start in range(0, len(audio), 512 * 7):  # 7 frames a call, beside an upload in the same batch
        out = backend.run_batch([audio[:3000], VadContinuation(audio[start:start + 512 * 7], state)])
        assert isinstance(out[1], VadContinued)
        pieces.extend(out[1].probs.tolist())
        state = out[1].state
    assert np.allclose(pieces, whole, atol=1e-6)
    assert whole.max() > 0.9 and whole[:10].max() < 0.3  # it hears the speech, not the leading silence


def test_clients_may_lower_their_priority_but_never_claim_realtime():
    from services.core.runtime.timing import PRIORITIES
    from services.router.upstream.admission import _client_priority

    def scope(value: bytes) -> dict:
        return {"type": "http", "headers": [(b"x-harmony-priority", value)]}

    assert PRIORITIES["realtime"] < 0 < PRIORITIES["batch"]
    assert _client_priority(scope(b"batch")) == "batch"
    assert _client_priority(scope(b"realtime")) is None
    assert _client_priority(scope(b"urgent")) is None


def _tone(seconds: float, level_db: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (10 ** (level_db / 20) * np.sqrt(2) * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_the_quiet_is_timed_from_where_the_sound_ends_not_from_silero_s_late_frames():
    # speech (a -12 dB tone) ends 200 samples into frame 10; Silero's probability stays up for 3 more frames
    audio = np.concatenate([_tone(10 * 512 / 16000 + 200 / 16000, -12), np.zeros(40 * 512, np.float32)])
    probs = [0.9] * 13 + [0.1] * 37
    detector = TurnDetector(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=320, frame_samples=512)
    events = detector.feed(0, probs, audio=audio[:50 * 512])
    stop = [e.at for e in events if e.kind == "stop"]
    sound_end = 10 * 512 + 200
    assert len(stop) == 1 and sound_end + 320 * 16 <= stop[0] < sound_end + 320 * 16 + 512 + 128
    # without the audio the quiet starts where Silero's speech frames end, 3 frames later
    detector = TurnDetector(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=320, frame_samples=512)
    assert [e.at for e in detector.feed(0, probs) if e.kind == "stop"] == [13 * 512 + 320 * 16]


def test_steady_noise_keeps_the_end_at_silero_s_frames():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, 50 * 512).astype(np.float32)  # -26 dB throughout: the level never drops
    audio = noise + np.concatenate([_tone(10 * 512 / 16000, -12), np.zeros(40 * 512, np.float32)])
    probs = [0.9] * 13 + [0.1] * 37
    detector = TurnDetector(threshold=0.5, prefix_padding_ms=0, silence_duration_ms=320, frame_samples=512)
    assert [e.at for e in detector.feed(0, probs, audio=audio) if e.kind == "stop"] == [13 * 512 + 320 * 16]


def test_the_last_delta_carries_what_the_partials_did_not():
    deltas = DeltaText()
    assert deltas.rest("Set a timer.") == "Set a timer."  # no partial went out: the whole text, as whisper-1
    deltas = DeltaText()
    deltas.next("Please call Stella and")
    assert deltas.rest("Please call Stella and ask her.") == " and ask her."
    deltas = DeltaText()
    deltas.next("Please fall Stella")
    assert deltas.rest("Please call Stella.") is None  # a rewrite: completed carries the text to keep
    assert DeltaText().rest("") is None
