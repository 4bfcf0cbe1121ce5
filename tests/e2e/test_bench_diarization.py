"""bench/diarization.py end to end, small: one meeting of two speakers through the shared `harmony serve`.

It checks that the bench runs against the real route and prints its table's figures, not a quality figure
(bench/diarization.py measures that, docs/benchmarks.md records it)."""

from __future__ import annotations

from bench.diarization import run, table

# draws the two English voices (Piper joe, espeak-ng), the quickest to synthesize, into a 21-s meeting of two turns
# each (4-7 s, about as much of each voice): each of the three passes diarizes half the audio of the bench's usual
# three turns a speaker
SEED = 3233


def test_one_small_meeting_is_diarized_and_scored(harmony):
    result = run(harmony.url, meetings=1, speakers=[2], seed=SEED, thresholds=[None, 0.9], turns_per_speaker=2)
    two = result["by_speakers"]["2"]
    assert two["meetings"] == 1 and 15 < two["audio_s"] < 30
    assert 0.0 <= two["der"] <= 1.5 and two["missed"] + two["confusion"] <= 1.0
    assert 0.3 < two["baseline_der"] < 0.7  # one speaker for two: about half the speech wrong
    assert two["count_right"] in (0.0, 1.0) and two["rtf"] > 0
    assert result["by_speakers"]["all"]["meetings"] == 1
    for key in ("default", "0.9"):
        naming = result["naming"][key]
        assert naming["known_s"] > 5 and 0.0 <= naming["named_right"] <= 1.0
        assert naming["impostor_runs"] == 1 and naming["false_match_count"] in (0, 1)
    text = table(result)
    assert "| 2 | 1 |" in text and "| engine default |" in text and "| 0.9 |" in text
