"""The diarization's pure parts: clustering windows into speakers, smoothing, naming, words into segments."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering

from services.router.diarization.clustering import cluster, name_speakers, smooth
from services.router.diarization.turns import TimedWord, Turn, segments, speaker_of_words, speaker_turns
from services.stt.chunking import span_windows


def _voices(rng, counts: list[int], spread: float = 0.15) -> np.ndarray:
    """Unit vectors around one random centre per speaker, in turn order."""
    centres = rng.normal(size=(len(counts), 64))
    rows = [centres[i] + spread * np.linalg.norm(centres[i]) / 8 * rng.normal(size=(n, 64))
            for i, n in enumerate(counts)]
    out = np.concatenate(rows)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_speakers_are_counted_and_labelled_in_order_of_first_appearance():
    rng = np.random.default_rng(0)
    x = _voices(rng, [8, 6, 7])
    assert cluster(x).tolist() == [0] * 8 + [1] * 6 + [2] * 7


def test_min_and_max_speakers_bound_the_count():
    rng = np.random.default_rng(1)
    x = _voices(rng, [8, 8, 8])
    assert len(set(cluster(x, max_speakers=2).tolist())) == 2
    one = _voices(rng, [20])
    assert len(set(cluster(one, min_speakers=2).tolist())) == 2
    assert cluster(one[:1]).tolist() == [0] and cluster(one[:0]).tolist() == []


def test_a_stray_window_joins_the_nearest_speaker_and_smoothing_removes_a_flicker():
    rng = np.random.default_rng(2)
    x = _voices(rng, [10, 10])
    x[4] = -x[4]  # one odd window inside the first speaker's turn
    labels = cluster(x)
    assert len(set(labels.tolist())) == 2
    assert smooth(np.array([0, 0, 0, 1, 0, 0, 0, 1, 1, 1])).tolist() == [0] * 7 + [1] * 3


def test_known_speakers_name_matching_clusters_only():
    a, b = np.eye(4)[0], np.eye(4)[1]
    means = {0: a, 1: b}
    assert name_speakers(means, [("ann", a * 2)]) == {0: "ann", 1: "A"}
    assert name_speakers(means, [("zed", np.eye(4)[2])]) == {0: "A", 1: "B"}
    assert name_speakers(means, [("ann", a), ("bob", 0.9 * b + 0.1 * a)]) == {0: "ann", 1: "bob"}


def test_words_go_to_the_nearest_window_and_make_segments_split_at_pauses():
    words = [TimedWord(" Hello", 0.0, 0.4), TimedWord(" there.", 0.5, 0.9), TimedWord(" Hi.", 1.2, 1.5),
             TimedWord(" Later", 4.0, 4.3)]
    speakers = speaker_of_words(words, centres=[0.3, 0.8, 1.4, 4.1], labels=[0, 0, 1, 1])
    assert speakers == [0, 0, 1, 1]
    found = segments(words, speakers)
    assert [(s.speaker, s.text, s.start, s.end) for s in found] == [
        (0, "Hello there.", 0.0, 0.9), (1, "Hi.", 1.2, 1.5), (1, "Later", 4.0, 4.3)]
    assert len(segments(words[:3], [0, 0, 0], max_segment_s=1.0)) == 2


def test_speech_is_cut_into_turns_where_the_speaker_changes_and_joined_across_short_pauses():
    # speech 0-4 s (A then B), 4.5-6 s (B), 9-10 s (B: after a long pause), 10.2-10.5 s (no window: nearest, B)
    centres = [0.8, 1.3, 1.8, 2.3, 2.8, 3.3, 4.8, 5.3, 9.5]
    labels = [0, 0, 0, 1, 1, 1, 1, 1, 1]
    turns = speaker_turns([(0.0, 4.0), (4.5, 6.0), (9.0, 10.0), (10.2, 10.5)], centres, labels)
    assert turns == [Turn(0, 0.0, 2.05), Turn(1, 2.05, 6.0), Turn(1, 9.0, 10.5)]
    assert speaker_turns([(0.0, 1.0)], [], []) == [Turn(0, 0.0, 1.0)]
    assert speaker_turns([], centres, labels) == []
    # a turn stays under max_turn_s: one speaker's long talk in several turns
    long = speaker_turns([(float(i), i + 0.8) for i in range(40)], [i + 0.4 for i in range(40)], [0] * 40)
    assert len(long) == 2 and long[0].end - long[0].start <= 30.0


def test_touching_turns_meet_at_the_quietest_moment_near_their_boundary():
    rate = 16000
    rng = np.random.default_rng(3)
    audio = (0.3 * rng.standard_normal(4 * rate)).astype(np.float32)
    audio[int(2.2 * rate):int(2.3 * rate)] = 0.0  # the real pause between two speakers, 0.25 s after the cut asked
    windows = span_windows(audio, [(0.0, 1.95), (1.95, 4.0)])
    assert [w.span for w in windows] == [0, 1]
    assert windows[0].end == windows[1].start
    assert 2.2 <= windows[0].end / rate <= 2.3
    # a span under 100 ms is not decoded; a span past the audio's end is clipped; a span over 30 s is cut
    assert [w.span for w in span_windows(audio, [(0.0, 0.05), (1.0, 9.0)])] == [1]
    assert span_windows(audio, [(1.0, 9.0)])[0].end == len(audio)
    long = np.zeros(70 * rate, dtype=np.float32)
    assert [w.span for w in span_windows(long, [(0.0, 70.0)])] == [0, 0, 0]


def _close_voices(rng, counts: list[int], similarity: float, spread: float = 0.02) -> np.ndarray:
    """Two tight voices whose centres have the given cosine similarity (synthetic voices of one family)."""
    a = rng.normal(size=64)
    a /= np.linalg.norm(a)
    b = rng.normal(size=64)
    b -= (b @ a) * a
    b /= np.linalg.norm(b)
    c = similarity * a + np.sqrt(1 - similarity ** 2) * b
    rows = [centre + spread * rng.normal(size=(n, 64)) for centre, n in zip((a, c), counts, strict=True)]
    out = np.concatenate(rows)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_one_voice_alone_is_one_speaker():
    rng = np.random.default_rng(3)
    for size in (12, 40, 120):
        assert set(cluster(_voices(rng, [size], spread=0.4)).tolist()) == {0}


def test_two_close_but_tight_voices_are_two_speakers():
    """Centres 0.85 alike (cosine distance 0.15, under the average-linkage cut of 0.4): the spectral cut parts them."""
    rng = np.random.default_rng(4)
    x = _close_voices(rng, [30, 25], similarity=0.85)
    assert cluster(x).tolist() == [0] * 30 + [1] * 25
    single_cut = AgglomerativeClustering(n_clusters=None, distance_threshold=0.4, metric="cosine", linkage="average")
    assert len(set(single_cut.fit_predict(x).tolist())) == 1  # what one distance cut makes of them
