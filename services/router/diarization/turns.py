"""Whisper's words to speaker segments, pure: each word goes to the speaker of the window nearest its middle (the
window whose centre is closest among those that cover it, else the nearest in time), and consecutive words of one
speaker make a segment, split at a pause over ``MAX_PAUSE_S`` and before it passes ``MAX_SEGMENT_S``."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

MAX_PAUSE_S = 1.0
MAX_SEGMENT_S = 30.0


@dataclass(frozen=True)
class TimedWord:
    text: str   # as Whisper writes it (a leading space between words)
    start: float
    end: float


@dataclass
class SpeakerSegment:
    speaker: int
    start: float
    end: float
    words: list[TimedWord] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(w.text for w in self.words).strip()


def speaker_of_words(words: list[TimedWord], centres: list[float], labels: list[int]) -> list[int]:
    """The label of the window whose centre is nearest each word's middle (``centres`` ascending); 0 without
    windows."""
    if not centres:
        return [0] * len(words)
    found = []
    for word in words:
        middle = (word.start + word.end) / 2
        i = bisect_left(centres, middle)
        near = [j for j in (i - 1, i) if 0 <= j < len(centres)]
        found.append(labels[min(near, key=lambda j: abs(centres[j] - middle))])
    return found


def segments(words: list[TimedWord], speakers: list[int], max_pause_s: float = MAX_PAUSE_S,
             max_segment_s: float = MAX_SEGMENT_S) -> list[SpeakerSegment]:
    """Consecutive words of one speaker as one segment, split at pauses and at ``max_segment_s``."""
    out: list[SpeakerSegment] = []
    for word, speaker in zip(words, speakers):
        last = out[-1] if out else None
        if (last is None or last.speaker != speaker or word.start - last.end > max_pause_s
                or word.end - last.start > max_segment_s):
            out.append(SpeakerSegment(speaker=speaker, start=word.start, end=word.end, words=[word]))
        else:
            last.words.append(word)
            last.end = max(last.end, word.end)
    return [s for s in out if s.text]
