"""Speakers' turns and Whisper's words to speaker segments, pure.

``speaker_turns`` cuts the VAD's speech at the changes of the windows' labels (halfway between the centres of two
windows of different speakers) and joins one speaker's pieces across pauses up to ``MAX_PAUSE_S``: the turns Whisper
then decodes one by one, each in its own language, so every word comes from one speaker's audio. Without turns
(a route with no vad step) each word goes to the speaker of the window nearest its middle. Consecutive words of one
speaker make a segment, split at a pause over ``MAX_PAUSE_S`` and before it passes ``MAX_SEGMENT_S``."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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


@dataclass(frozen=True)
class Turn:
    speaker: int
    start: float
    end: float


def speaker_turns(speech: list[tuple[float, float]], centres: list[float], labels: list[int],
                  max_pause_s: float = MAX_PAUSE_S, max_turn_s: float = MAX_SEGMENT_S) -> list[Turn]:
    """The speech (time-ordered spans) cut where the label of the windows (``centres`` ascending) changes, each
    piece labelled with its windows' speaker (a span without a window centre in it: the nearest window's), then a
    speaker's consecutive pieces joined across pauses up to ``max_pause_s`` while the turn stays under
    ``max_turn_s``."""
    pieces: list[Turn] = []
    for start, end in speech:
        inside = list(range(bisect_left(centres, start), bisect_right(centres, end)))
        if not inside:
            pieces.append(Turn(_nearest(centres, labels, (start + end) / 2), start, end))
            continue
        begin = start
        for i, j in zip(inside, inside[1:]):
            if labels[i] != labels[j]:
                cut = (centres[i] + centres[j]) / 2
                pieces.append(Turn(labels[i], begin, cut))
                begin = cut
        pieces.append(Turn(labels[inside[-1]], begin, end))
    turns: list[Turn] = []
    for piece in pieces:
        last = turns[-1] if turns else None
        if (last is not None and last.speaker == piece.speaker and piece.start - last.end <= max_pause_s
                and piece.end - last.start <= max_turn_s):
            turns[-1] = Turn(last.speaker, last.start, piece.end)
        else:
            turns.append(piece)
    return turns


def _nearest(centres: list[float], labels: list[int], at: float) -> int:
    if not centres:
        return 0
    i = bisect_left(centres, at)
    near = [j for j in (i - 1, i) if 0 <= j < len(centres)]
    return labels[min(near, key=lambda j: abs(centres[j] - at))]


def speaker_of_words(words: list[TimedWord], centres: list[float], labels: list[int]) -> list[int]:
    """The label of the window whose centre is nearest each word's middle (``centres`` ascending); 0 without
    windows."""
    return [_nearest(centres, labels, (word.start + word.end) / 2) for word in words]


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
