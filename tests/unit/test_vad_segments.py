"""Speech segments from synthetic per-frame probabilities: Silero's thresholds, durations, padding and merging."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.wire import VadParams
from services.vad.segments import VadOptions, options_of, speech_ranges, speech_segments

F = 512  # samples per frame (32 ms at 16 kHz)
RAW = {"min_speech_duration_ms": 0, "min_silence_duration_ms": 0, "speech_pad_ms": 0}


def probs(*runs: tuple[float, int]) -> list[float]:
    """``probs((0.0, 10), (0.9, 20))``: 10 frames at 0.0, then 20 at 0.9."""
    return [value for value, count in runs for _ in range(count)]


def test_one_block_of_speech_is_padded_on_both_sides():
    p = probs((0.0, 10), (0.9, 20), (0.0, 10))
    assert speech_ranges(p, **RAW) == [(10 * F, 30 * F)]
    assert speech_ranges(p) == [(10 * F - 480, 30 * F + 480)]  # default pad 30 ms = 480 samples
    assert speech_segments(p) == [{"start": round((10 * F - 480) / 16000, 3), "end": round((30 * F + 480) / 16000, 3)}]


def test_no_speech_gives_no_segments():
    assert speech_ranges(probs((0.2, 100))) == []
    assert speech_ranges([]) == []


def test_threshold_decides_what_counts_as_speech():
    p = probs((0.0, 10), (0.6, 20), (0.0, 10))
    assert speech_ranges(p, threshold=0.5, **RAW) == [(10 * F, 30 * F)]
    assert speech_ranges(p, threshold=0.7, **RAW) == []


def test_hysteresis_between_the_two_thresholds_keeps_the_segment_open():
    # 0.4 lies between neg_threshold (0.35) and threshold (0.5): neither opens nor closes
    p = probs((0.4, 5), (0.9, 10), (0.4, 10), (0.9, 10), (0.4, 5))
    assert speech_ranges(p, **RAW) == [(5 * F, 40 * F)]
    # 0.3 is below neg_threshold: a silence that closes the segment
    p = probs((0.9, 10), (0.3, 10), (0.9, 10))
    assert speech_ranges(p, **RAW) == [(0, 10 * F), (20 * F, 30 * F)]
    assert speech_ranges(p, neg_threshold=0.2, **RAW) == [(0, 30 * F)]


def test_short_speech_is_dropped_below_min_speech_duration():
    p = probs((0.0, 10), (0.9, 7), (0.0, 20), (0.9, 8), (0.0, 20))  # 224 ms, then 256 ms of speech
    kept = speech_ranges(p, min_speech_duration_ms=250, min_silence_duration_ms=0, speech_pad_ms=0)
    assert kept == [(37 * F, 45 * F)]
    assert len(speech_ranges(p, min_speech_duration_ms=100, min_silence_duration_ms=0, speech_pad_ms=0)) == 2
    assert speech_ranges(p, min_speech_duration_ms=1000, min_silence_duration_ms=0, speech_pad_ms=0) == []


def test_short_gaps_are_merged_long_gaps_split():
    # min_silence 100 ms = 1600 samples: a segment closes once a silence lasted 4 frames past its first frame
    short_gap = probs((0.9, 10), (0.0, 4), (0.9, 10), (0.0, 10))  # 128 ms gap
    long_gap = probs((0.9, 10), (0.0, 5), (0.9, 10), (0.0, 10))   # 160 ms gap
    opts = {"min_speech_duration_ms": 0, "speech_pad_ms": 0, "min_silence_duration_ms": 100}
    assert speech_ranges(short_gap, **opts) == [(0, 24 * F)]
    assert speech_ranges(long_gap, **opts) == [(0, 10 * F), (15 * F, 25 * F)]
    assert speech_ranges(long_gap, **{**opts, "min_silence_duration_ms": 200}) == [(0, 25 * F)]


def test_padding_splits_gaps_narrower_than_two_pads():
    p = probs((0.0, 20), (0.9, 10), (0.0, 5), (0.9, 10), (0.0, 20))  # 160-ms gap = 2560 samples
    opts = {"min_speech_duration_ms": 0, "min_silence_duration_ms": 100}
    # pad 50 ms (800 samples): room for both pads
    assert speech_ranges(p, speech_pad_ms=50, **opts) == [(20 * F - 800, 30 * F + 800), (35 * F - 800, 45 * F + 800)]
    # pad 100 ms (1600 samples): 2 * pad > gap, so the two meet in the middle of the gap
    assert speech_ranges(p, speech_pad_ms=100, **opts) == [(20 * F - 1600, 30 * F + 1280),
                                                          (30 * F + 1280, 45 * F + 1600)]


def test_padding_is_clipped_to_the_audio():
    p = probs((0.9, 10), (0.0, 1))
    assert speech_ranges(p, num_samples=10 * F + 100, speech_pad_ms=30, min_speech_duration_ms=0) == [
        (0, 10 * F + 100)]


def test_speech_running_to_the_end_ends_with_the_audio():
    p = probs((0.0, 10), (0.9, 20))
    assert speech_ranges(p, num_samples=30 * F - 200, **RAW) == [(10 * F, 30 * F - 200)]


def test_max_speech_duration_cuts_at_the_longest_pause():
    # 0.8 s speech, 128-ms pause, 0.8 s, 224-ms pause, 0.8 s, ... with a 2-s limit
    p = probs((0.9, 25), (0.0, 4), (0.9, 25), (0.0, 7), (0.9, 25), (0.0, 4), (0.9, 25))
    opts = {"min_speech_duration_ms": 0, "speech_pad_ms": 0, "min_silence_duration_ms": 300}
    assert speech_ranges(p, **opts) == [(0, len(p) * F)]
    cut = speech_ranges(p, max_speech_duration_s=2.0, **opts)
    assert cut[0] == (0, 54 * F)  # the longer (224 ms) of the two pauses seen so far
    assert cut[1][0] == 61 * F
    assert all((e - s) / 16000 <= 2.0 for s, e in cut)


def test_max_speech_duration_without_a_pause_cuts_hard():
    p = probs((0.9, 100))
    cut = speech_ranges(p, max_speech_duration_s=1.0, **RAW)
    assert len(cut) >= 3 and all((e - s) / 16000 <= 1.0 for s, e in cut)
    assert cut[0][0] == 0 and cut[-1][1] == 100 * F


def test_parse_options_defaults_and_errors():
    assert options_of(VadParams.from_form({})) == VadOptions()
    fields = {"threshold": "0.7", "min_speech_duration_ms": "100", "min_silence_duration_ms": "50",
              "speech_pad_ms": "0", "max_speech_duration_s": "20"}
    params = VadParams.from_form(fields)
    assert options_of(params) == VadOptions(0.7, 100, 50, 0, 20.0)
    assert VadParams.from_form(params.form()) == params  # what the router sends is what the service reads
    assert "max_speech_duration_s" not in VadParams().form()
    for name, bad in [("threshold", "1.5"), ("threshold", "loud"), ("threshold", "nan"), ("speech_pad_ms", "-1"),
                      ("min_speech_duration_ms", "x"), ("min_silence_duration_ms", "-5"),
                      ("max_speech_duration_s", "0")]:
        with pytest.raises(InvalidRequest) as err:
            VadParams.from_form({name: bad})
        assert err.value.param == name


CASES = [
    {},
    {"threshold": 0.3},
    {"threshold": 0.7, "min_speech_duration_ms": 100, "min_silence_duration_ms": 300, "speech_pad_ms": 100},
    {"min_speech_duration_ms": 0, "min_silence_duration_ms": 0, "speech_pad_ms": 0},
    {"max_speech_duration_s": 1.0},
    {"max_speech_duration_s": 3.0, "min_silence_duration_ms": 500, "speech_pad_ms": 60},
    {"neg_threshold": 0.45, "speech_pad_ms": 10},
]


@pytest.mark.parametrize("params", CASES)
def test_same_ranges_as_silero_reference(params):
    """Same samples as silero-vad's own get_speech_timestamps_from_probs on random, speech-like probabilities."""
    pytest.importorskip("torch")
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    rng = np.random.default_rng(7)
    for trial in range(20):
        # runs of speech-ish and silence-ish frames of random lengths, with jitter around the thresholds
        p: list[float] = []
        while len(p) < 600:
            level = rng.choice([0.05, 0.4, 0.95])
            p += list(np.clip(level + rng.normal(0, 0.2, int(rng.integers(1, 40))), 0, 1))
        num_samples = len(p) * F - int(rng.integers(0, F))
        reference = get_speech_timestamps_from_probs(p, audio_length_samples=num_samples, **params)
        assert speech_ranges(p, num_samples, **params) == [(s["start"], s["end"]) for s in reference], trial
