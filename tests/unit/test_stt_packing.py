"""Window packing's plan and split (services/stt/packing.py): pure, no model."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.contracts.wire import Segment, Word
from services.stt import packing
from services.stt.packing import Candidate, Pack, plan, split, to_own_time
from services.stt.types import SAMPLE_RATE

S = SAMPLE_RATE


def seconds(n: float) -> int:
    return int(n * S)


def candidate(index: int, length_s: float, key: str = "en", start_s: float = 0.0) -> Candidate:
    return Candidate(index, key, seconds(start_s), seconds(start_s + length_s))


def segment(start: float, end: float, *words: tuple[str, float, float], probability: float = 0.9) -> Segment:
    return Segment(start=start, end=end, text=" ".join(w for w, _, _ in words),
                   words=[Word(word=w, start=a, end=b, probability=probability) for w, a, b in words])


def two_clip_pack() -> Pack:
    """Clip 0 on 0-3 s, a 2-s gap, clip 1 on 5-9 s: cells split at 4 s."""
    packs = plan([candidate(0, 3.0), candidate(1, 4.0)], capacity_s=26, gap_s=2.0)
    assert len(packs) == 1
    return packs[0]


def test_plan_lays_members_with_gaps_first_fit_within_capacity():
    packs = plan([candidate(i, 4.0) for i in range(8)], capacity_s=26, gap_s=2.0)
    # 4 + (2 + 4) * 3 = 22 s fits, a fifth would need 28 s
    assert packing.CAPACITY_S <= 30 and packing.GAP_S >= 1.0
    assert [[m.index for m in p.members] for p in packs] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [m.slot for m in packs[0].members] == [0, seconds(6), seconds(12), seconds(18)]
    assert all(p.samples <= seconds(26) for p in packs)


def test_plan_never_mixes_keys_and_drops_packs_of_one():
    packs = plan([candidate(0, 3, "en"), candidate(1, 3, "de"), candidate(2, 3, "en"), candidate(3, 3, "fr")])
    assert [[m.index for m in p.members] for p in packs] == [[0, 2]]  # "de" and "fr" alone gain nothing


def test_plan_skips_what_cannot_fit():
    assert plan([candidate(0, 27.0), candidate(1, 27.0)], capacity_s=26) == []
    assert plan([candidate(0, 0.0), candidate(1, 3.0)]) == []


def test_packed_audio_puts_each_trimmed_member_at_its_slot_with_silence_between_and_after():
    audios = [np.full(seconds(4), 0.5, np.float32), np.full(seconds(3), -0.25, np.float32)]
    pack = plan([candidate(0, 3.0, start_s=0.5), candidate(1, 3.0)], gap_s=2.0)[0]
    out = packing.packed_audio(pack, audios)
    assert len(out) == seconds(30)  # a whole Whisper window: silence, not Whisper's padding, after the last member
    assert np.all(out[: seconds(3)] == 0.5) and np.all(out[seconds(3):seconds(5)] == 0)
    assert np.all(out[seconds(5):seconds(8)] == -0.25) and np.all(out[seconds(8):] == 0)


def test_split_gives_each_segment_to_the_member_its_words_start_on():
    pack = two_clip_pack()
    # Whisper often runs a segment to the next speech, and stretches a last word over the gap: still clip 0's
    first = segment(0.0, 5.1, ("the", 0.1, 0.4), ("dog.", 2.6, 4.6))
    second = segment(5.1, 9.0, ("please", 5.1, 5.4), ("call", 5.5, 5.9))
    shares = split(pack, [first, second])
    assert shares.failed == set()
    assert shares.segments == {0: [first], 1: [second]}


def test_split_fails_both_members_when_a_segment_straddles_the_gap():
    pack = two_clip_pack()
    joined = segment(0.0, 6.0, ("ask", 2.0, 2.4), ("her", 2.5, 2.9), ("every", 5.2, 5.6))
    shares = split(pack, [joined])
    assert shares.failed == {0, 1} and shares.segments == {}


def test_split_fails_the_neighbours_of_a_word_hallucinated_in_the_gap():
    pack = two_clip_pack()
    first = segment(0.0, 3.0, ("the", 0.1, 0.4), ("dog.", 2.5, 2.9))
    ghost = segment(3.4, 4.6, ("thank", 3.4, 3.9), ("you.", 3.9, 4.6))
    second = segment(5.0, 9.0, ("please", 5.1, 5.4))
    assert split(pack, [first, ghost, second]).failed == {0, 1}
    # a member's last word stretched over the gap (a timing Whisper's alignment often gives) stays its own
    stretched = segment(0.0, 3.9, ("dog.", 2.5, 2.9), ("store.", 3.4, 3.8))
    shares = split(pack, [stretched, second])
    assert shares.failed == set() and shares.segments == {0: [stretched], 1: [second]}


def test_split_fails_a_member_that_got_no_segment_and_text_without_words():
    pack = two_clip_pack()
    only_first = segment(0.0, 3.0, ("the", 0.1, 0.4))
    shares = split(pack, [only_first])
    assert shares.failed == {1} and shares.segments == {0: [only_first]}
    wordless = Segment(start=5.5, end=8.0, text=" please call")
    assert split(pack, [only_first, wordless]).failed == {0, 1}  # nothing proves whose it is: nobody's share is sure


def test_split_fails_the_last_member_for_words_past_its_audio():
    pack = two_clip_pack()
    shares = split(pack, [segment(0, 3, ("a", 0.1, 0.3)), segment(5, 9.5, ("b", 5.1, 5.3)),
                          segment(9.5, 12, ("ghost", 9.6, 10.0))])
    assert shares.failed == {1}


def test_split_fails_a_member_whose_sentence_comes_again_squeezed_at_the_end_of_its_audio():
    """Whisper tiny.en, packed with wider gaps, wrote a member's sentence twice: the second time its words all at
    the last instant of the member's audio (not in the gap). Whisper's word-anomaly rule rejects it."""
    pack = two_clip_pack()
    first = segment(0.0, 3.0, ("the", 0.1, 0.4), ("dog.", 2.5, 2.9))
    said = segment(5.0, 9.0, ("a", 5.1, 5.3), ("journey", 5.3, 5.7), ("of", 5.7, 5.9), ("miles.", 8.0, 8.9))
    again = segment(9.0, 9.04, ("a", 9.0, 9.0), ("journey", 9.0, 9.0), ("of", 9.0, 9.0), ("miles.", 9.0, 9.04))
    shares = split(pack, [first, said, again])
    assert shares.failed == {1} and shares.segments == {0: [first]}
    improbable = segment(5.0, 9.0, ("a", 5.1, 5.3), ("journey", 5.3, 5.7), ("of", 5.7, 5.9), probability=0.1)
    assert split(pack, [first, improbable]).failed == {1}
    assert split(pack, [first, said]).failed == set()  # the sentence once, spoken at a speaker's pace: kept


def test_anomalous_is_whispers_rule_over_the_first_eight_words_without_punctuation():
    def words(*durations: float, probability: float = 0.9) -> Segment:
        t, out = 0.0, []
        for i, d in enumerate(durations):
            out.append((f"w{i}", t, t + d))
            t += d
        return segment(0.0, t, *out, probability=probability)

    assert not packing.anomalous(words(0.3, 0.3, 0.3))
    assert packing.anomalous(words(0.0, 0.0, 0.3))  # two words in no time: 2 x 2.0 >= 3
    assert not packing.anomalous(words(0.0, *[0.3] * 9))  # one squeezed word among ten: 2.0 < 3
    assert packing.anomalous(words(0.3, 0.3, 0.3, probability=0.1))  # each improbable: about one a word
    assert packing.anomalous(words(0.3, 3.5, 0.3, 3.6))  # words stretched past 2 s: 1.5 + 1.6 >= 3
    assert not packing.anomalous(words(0.3, 3.5, 0.3, 2.6))  # 1.5 + 0.6 < 3
    assert not packing.anomalous(segment(0.0, 0.5, (".", 0.5, 0.5)))  # punctuation alone is no word


def test_to_own_time_shifts_to_the_member_and_clamps_to_its_audio():
    pack = plan([candidate(0, 3.0), candidate(1, 4.0, start_s=0.5)], gap_s=2.0)[0]
    member = pack.members[1]  # its audio 0.5-4.5 s of its own window sits at 5-9 s; its window starts at 30 s
    packed = segment(4.8, 9.6, ("please", 5.1, 5.4), ("call", 8.0, 9.6))
    own = to_own_time(member, packed, offset=30.0, seek=3000, keep_words=True)
    assert (own.start, own.end, own.seek) == (30.5, 34.5, 3000)  # clamped to its trimmed audio
    assert [(w.start, w.end) for w in own.words] == [(30.6, 30.9), (33.5, 34.5)]
    assert to_own_time(member, packed, 0.0, 0, keep_words=False).words is None


@pytest.mark.parametrize("lead,tail", [(0.0, 0.0), (1.0, 0.5), (0.05, 2.0)])
def test_speech_edges_trims_silence_and_keeps_a_margin(lead, tail):
    tone = (0.3 * np.sin(np.arange(seconds(2)) * 2 * np.pi * 220 / S)).astype(np.float32)
    audio = np.concatenate([np.zeros(seconds(lead), np.float32), tone, np.zeros(seconds(tail), np.float32)])
    start, end = packing.speech_edges(audio)
    assert start == max(0, seconds(lead) - seconds(packing.EDGE_MARGIN_S))
    assert end == min(len(audio), seconds(lead + 2) + seconds(packing.EDGE_MARGIN_S))


def test_speech_edges_keeps_all_of_audio_with_nothing_loud():
    assert packing.speech_edges(np.zeros(seconds(3), np.float32)) == (0, seconds(3))
    assert packing.speech_edges(np.zeros(5, np.float32)) == (0, 5)
