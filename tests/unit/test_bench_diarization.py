"""bench/diarization.py's own parts: the meetings' timeline, the reference, the answer's conversion and the scores."""

from __future__ import annotations

import random

import pytest
from openai.types.audio import TranscriptionDiarized
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from bench.diarization import COLLAR, Naming, hypothesis, named_time, one_speaker, table
from bench.diarization_meetings import (
    ENGLISH,
    JAPANESE,
    OVERLAP_SECONDS,
    PAUSE_SECONDS,
    SENTENCE_GAP_S,
    VOICES,
    Meeting,
    Turn,
    gaps,
    pick_lines,
    plan_meeting,
    reference_annotation,
    speaker_order,
    timeline,
    uem,
)

# speech lengths (s) of 13 lines, as the engine's voices give them: short answers and sentences of 3-4.5 s
LENGTHS = [0.4, 0.75, 0.93, 0.55, 0.6, 2.67, 3.62, 3.16, 3.0, 3.22, 3.24, 3.0, 3.36]


def plan(count: int, seed: int, turns_per_speaker: int = 3) -> list[Turn]:
    names = ["a", "b", "c", "d"][:count]
    return plan_meeting(names, {name: LENGTHS for name in names}, turns_per_speaker * count, random.Random(seed))


def test_every_speaker_speaks_and_never_twice_in_a_row():
    for count in (2, 3, 4):
        for seed in range(20):
            order = speaker_order(count, 3 * count, random.Random(seed))
            assert len(order) == 3 * count
            assert all(a != b for a, b in zip(order, order[1:]))
            assert all(order.count(who) == 3 for who in range(count))


@pytest.mark.parametrize("count", [2, 3, 4])
def test_turns_last_1_to_15_seconds_with_pauses_and_some_overlaps(count):
    between = []
    for seed in range(10):
        turns = plan(count, seed)
        assert {turn.speaker for turn in turns} == set("abcd"[:count])
        for turn in turns:
            assert 1.0 <= turn.end - turn.start <= 15.0
            assert turn.end - turn.start == pytest.approx(sum(LENGTHS[i] for i in turn.lines)
                                                          + SENTENCE_GAP_S * (len(turn.lines) - 1))
        between += [b.start - a.end for a, b in zip(turns, turns[1:])]
        # never three voices at once: a turn starts after the one before the previous has ended
        assert all(c.start >= a.end for a, c in zip(turns, turns[2:]))
    overlaps = [g for g in between if g < 0]
    pauses = [g for g in between if g >= 0]
    assert all(OVERLAP_SECONDS[0] <= -g <= OVERLAP_SECONDS[1] for g in overlaps)
    assert all(PAUSE_SECONDS[0] <= g <= PAUSE_SECONDS[1] for g in pauses)
    assert 0.1 < len(overlaps) / len(between) < 0.45  # some, not most


def test_the_same_seed_gives_the_same_meeting_and_another_seed_another():
    assert plan(3, 7) == plan(3, 7)
    assert plan(3, 7) != plan(3, 8)


def test_timeline_lays_turns_out_after_their_gaps():
    assert timeline([2.0, 1.0, 3.0], [0.5, -0.25], lead_in=0.5) == [(0.5, 2.5), (3.0, 4.0), (3.75, 6.75)]
    assert all(PAUSE_SECONDS[0] <= g <= PAUSE_SECONDS[1] for g in gaps(50, random.Random(1), overlap_share=0.0))
    assert all(g < 0 for g in gaps(50, random.Random(1), overlap_share=1.0))


def test_lines_fill_a_turn_up_to_its_target_and_at_least_a_second():
    rng = random.Random(3)
    for target in (1.0, 4.0, 9.5, 15.0):
        lines = pick_lines(LENGTHS, target, rng)
        length = sum(LENGTHS[i] for i in lines) + SENTENCE_GAP_S * (len(lines) - 1)
        assert len(set(lines)) == len(lines)
        assert 1.0 <= length <= max(target, 1.0 + max(LENGTHS))
    assert len(pick_lines(LENGTHS, 15.0, rng)) > 2  # a long turn says several lines


def test_the_voices_are_distinct_and_say_their_own_language():
    assert len({voice.voice for voice in VOICES}) == len({voice.name for voice in VOICES}) == len(VOICES) >= 5
    assert all(voice.lines is (JAPANESE if voice.voice.startswith("kokoro-") else ENGLISH) for voice in VOICES)
    assert all(set(voice.reference_lines).isdisjoint(voice.lines) for voice in VOICES)


def test_the_reference_is_one_segment_per_turn_overlaps_kept():
    turns = [Turn("a", 0.5, 4.0, (5,)), Turn("b", 3.7, 6.0, (6,)), Turn("a", 6.5, 8.0, (7,))]
    truth = reference_annotation(turns)
    assert sorted(truth.labels()) == ["a", "b"]
    assert truth.label_duration("a") == pytest.approx(5.0)
    assert truth.label_duration("b") == pytest.approx(2.3)
    assert truth.get_overlap().duration() == pytest.approx(0.3)
    assert len(list(truth.itertracks())) == 3


def test_an_answer_becomes_an_annotation_of_its_speakers():
    answer = TranscriptionDiarized.model_validate({
        "task": "transcribe", "duration": 9.0, "text": "Hello there. Hi. Bye.",
        "segments": [
            {"type": "transcript.text.segment", "id": "seg_0", "start": 0.5, "end": 2.0, "speaker": "A",
             "text": "Hello there."},
            {"type": "transcript.text.segment", "id": "seg_1", "start": 2.4, "end": 3.0, "speaker": "joe",
             "text": "Hi."},
            {"type": "transcript.text.segment", "id": "seg_2", "start": 3.5, "end": 4.5, "speaker": "A",
             "text": "Bye."},
        ],
        "usage": {"type": "duration", "seconds": 9},
    })
    found = hypothesis(answer)
    assert sorted(found.labels()) == ["A", "joe"]
    assert found.label_duration("A") == pytest.approx(2.5)
    assert [(s.start, s.end) for s in found.label_timeline("joe")] == [(2.4, 3.0)]


def test_one_speaker_for_two_equal_speakers_is_half_the_speech_wrong():
    truth = reference_annotation([Turn("a", 0.0, 10.0, (0,)), Turn("b", 10.5, 20.5, (1,))])
    baseline = one_speaker(truth)
    assert baseline.labels() == ["everyone"]
    metric = DiarizationErrorRate(collar=COLLAR)
    assert metric(truth, baseline, uem=uem(21.0)) == pytest.approx(0.5)
    assert metric(truth, truth, uem=uem(21.0)) == 0.0  # the truth scores no error


def test_known_speakers_are_scored_by_their_time_under_their_name():
    truth = reference_annotation([Turn("joe", 0.0, 4.0, (0,)), Turn("kumo", 4.5, 8.5, (1,))])
    found = Annotation()
    found[Segment(0.0, 3.0), 0] = "joe"  # a quarter of joe's time missed
    found[Segment(3.0, 4.0), 1] = "B"
    found[Segment(4.5, 8.5), 2] = "kumo"
    assert named_time(truth, found, ["joe"]) == pytest.approx((3.0, 4.0))
    assert named_time(truth, found, ["joe", "kumo"]) == pytest.approx((7.0, 8.0))


def test_an_absent_voice_named_in_the_answer_is_a_false_match():
    import numpy as np

    truth_turns = [Turn("joe", 0.0, 4.0, (0,)), Turn("kumo", 4.5, 8.5, (1,))]
    voices = {voice.name: voice for voice in VOICES}
    meeting = Meeting([voices["joe"], voices["kumo"]], truth_turns, np.zeros(16000 * 9, dtype=np.float32),
                      known=[voices["joe"]], impostor=voices["alpha"])
    naming = Naming()
    right = reference_annotation(truth_turns)
    naming.add(meeting, right)
    wrong = Annotation()
    wrong[Segment(0.0, 4.0), 0] = "joe"
    wrong[Segment(4.5, 8.5), 1] = "alpha"  # kumo taken for the absent alpha
    naming.add(meeting, wrong)
    figures = naming.figures()
    assert figures["named_right"] == 1.0
    assert figures["false_match"] == 0.5 and figures["false_match_count"] == 1 and figures["impostor_runs"] == 2


def test_the_table_prints_every_group_and_threshold():
    by = {"der": 0.1, "missed": 0.05, "false_alarm": 0.02, "confusion": 0.03, "count_right": 0.75,
          "baseline_der": 0.5, "baseline_count_right": 0.0, "rtf": 0.2, "meetings": 4, "audio_s": 200.0}
    naming = {"named_right": 0.95, "known_s": 100.0, "false_match": 0.25, "false_match_count": 1,
              "impostor_runs": 4}
    text = table({"model": "m", "seed": 1, "meetings_per_count": 4, "collar": 0.25,
                  "by_speakers": {"2": by, "all": by}, "naming": {"default": naming, "0.8": naming}})
    assert "| 2 | 4 | 200 s | 10.0 % |" in text and "| all |" in text
    assert "| engine default | 95.0 % | 100 s | 1/4 (25.0 %) |" in text and "| 0.8 |" in text
