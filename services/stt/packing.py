"""Window packing: short windows of different requests decoded as one 30-second Whisper window.

Whisper reads a padded 30-second window whatever the audio's length, so a 4-second clip costs
a full encoder pass. Packing lays the short windows of one batch (same task, language, prompt
and temperature) one after another with ``GAP_S`` of silence between them, so one encoder pass
and one decode serve several requests; the decode's segments go back to the request whose
audio they lie on, shifted to that request's own time.

Nothing here guesses. Packed windows are decoded with word timestamps, and a request gets
its segments only when every word of them starts on its own stretch of the packed window (its
*cell*: its audio and the nearer half of each gap beside it). A segment whose words start in two
cells (it straddles a gap), a segment that lies inside a gap (a hallucination between clips), a
segment Whisper's own word-anomaly rule rejects (its words squeezed into no time or improbable: a
member's sentence repeated at the end of its audio, as Whisper tiny.en wrote with wider gaps), a
member with speech that got no segment at all (Whisper skipped it), or text without word timings
(every member) fails those members: they are
decoded again unpacked, as they would have been without packing.

This module is the plan and the split, pure (numpy only); ``speech_edges`` trims digital silence,
``has_speech`` (Silero VAD, as faster-whisper bundles it) keeps clips with no speech (noise,
clicks) out of packs, so Whisper's no-speech check still sees them alone.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from services.core.contracts.wire import Segment, Word
from services.stt.types import SAMPLE_RATE, WINDOW_SECONDS

GAP_S = 1.5           # silence between two members: Whisper ends a segment there, and word timings stay apart
CAPACITY_S = 24.0     # members and gaps end by then (Whisper tiny.en skipped a last clip that started after ~21 s)
MAX_MEMBER_S = 10.0   # a window is packed only when its trimmed audio is at most this long
EDGE_DBFS = -50.0     # 10-ms frames quieter than this at either end are trimmed before packing...
EDGE_MARGIN_S = 0.2   # ...keeping this much of them
WORD_IN_GAP_S = 0.2   # a word that starts and ends more than this inside a gap is between clips
PUNCTUATION = "\"'“¿([{-.。,，!！?？:：”)]}、"  # not words, for the anomaly rule (faster-whisper's defaults)


@dataclass(frozen=True)
class Candidate:
    """A window that may be packed: its position in the batch, what must match to share a pack, and the part of
    its audio (samples, after trimming silence at its ends) that goes into the pack."""

    index: int
    key: Hashable
    start: int
    end: int

    @property
    def samples(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Member:
    """A candidate placed in a pack: ``slot`` is where its audio starts in the packed window (samples)."""

    candidate: Candidate
    slot: int

    @property
    def index(self) -> int:
        return self.candidate.index

    @property
    def slot_end(self) -> int:
        return self.slot + self.candidate.samples

    def to_own_time(self, packed_s: float, offset: float) -> float:
        """A time in the packed window as a time of the member's own request (clamped to its audio)."""
        own = packed_s - self.slot / SAMPLE_RATE + self.candidate.start / SAMPLE_RATE
        return offset + min(max(own, self.candidate.start / SAMPLE_RATE), self.candidate.end / SAMPLE_RATE)


@dataclass
class Pack:
    members: list[Member] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return self.members[-1].slot_end if self.members else 0

    def cells(self) -> list[tuple[float, float]]:
        """Each member's stretch of the packed window in seconds: its slot and the nearer half of each gap."""
        bounds = [0.0]
        for left, right in zip(self.members, self.members[1:]):
            bounds.append((left.slot_end + right.slot) / 2 / SAMPLE_RATE)
        bounds.append(float("inf"))
        return list(zip(bounds, bounds[1:]))


def speech_edges(audio: np.ndarray, dbfs: float = EDGE_DBFS, margin_s: float = EDGE_MARGIN_S) -> tuple[int, int]:
    """The part of ``audio`` between its first and last 10-ms frame louder than ``dbfs``, with ``margin_s`` of what
    was quieter kept at each end; all of it when nothing is louder."""
    hop = SAMPLE_RATE // 100
    frames = len(audio) // hop
    if frames == 0:
        return 0, len(audio)
    rms = np.sqrt(np.square(audio[: frames * hop].reshape(frames, hop), dtype=np.float64).mean(axis=1))
    loud = np.flatnonzero(rms > 10.0 ** (dbfs / 20.0))
    if loud.size == 0:
        return 0, len(audio)
    margin = int(margin_s * SAMPLE_RATE)
    start = max(0, int(loud[0]) * hop - margin)
    end = len(audio) if loud[-1] == frames - 1 else min(len(audio), (int(loud[-1]) + 1) * hop + margin)
    return start, end


def has_speech(audio: np.ndarray) -> bool:
    """Silero VAD (bundled with faster-whisper) hears speech somewhere in ``audio``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(audio, VadOptions(min_speech_duration_ms=100)))


def plan(candidates: Sequence[Candidate], capacity_s: float = CAPACITY_S, gap_s: float = GAP_S) -> list[Pack]:
    """Packs of at least two members, candidates of one key only, first fit in batch order (deterministic).

    A candidate longer than the capacity, or left alone, is in no pack."""
    capacity, gap = int(capacity_s * SAMPLE_RATE), int(gap_s * SAMPLE_RATE)
    by_key: dict[Hashable, list[Pack]] = {}
    for candidate in candidates:
        if candidate.samples <= 0 or candidate.samples > capacity:
            continue
        packs = by_key.setdefault(candidate.key, [])
        for pack in packs:
            slot = pack.samples + gap
            if slot + candidate.samples <= capacity:
                pack.members.append(Member(candidate, slot))
                break
        else:
            packs.append(Pack([Member(candidate, 0)]))
    return [pack for packs in by_key.values() for pack in packs if len(pack.members) > 1]


def packed_audio(pack: Pack, audios: Sequence[np.ndarray]) -> np.ndarray:
    """The members' trimmed audio at their slots, silence between them and after them up to the full window.

    The window is filled with silence rather than left for Whisper's padding: its features pad with zeros, which
    is not what silence looks like, and Whisper then often took the last member for speech cut off by the end of
    the window and skipped it."""
    out = np.zeros(max(pack.samples, int(WINDOW_SECONDS * SAMPLE_RATE)), dtype=np.float32)
    for member in pack.members:
        c = member.candidate
        out[member.slot:member.slot_end] = audios[c.index][c.start:c.end]
    return out


@dataclass
class Split:
    """The segments each member keeps (by member position in the pack), and the members to decode again."""

    segments: dict[int, list[Segment]]
    failed: set[int]


def split(pack: Pack, segments: Sequence[Segment]) -> Split:
    """Each segment of the packed decode to the one member all its words start on; see the module's rules."""
    cells = pack.cells()
    slots = [(m.slot / SAMPLE_RATE, m.slot_end / SAMPLE_RATE) for m in pack.members]

    def cell_of(t: float) -> int:
        return next(i for i, (lo, hi) in enumerate(cells) if t < hi)

    def in_gap(word: Word) -> list[int]:
        """The members beside the gap a word lies in (none when it touches a member's audio)."""
        for i, (_, slot_end) in enumerate(slots):
            following = slots[i + 1][0] if i + 1 < len(slots) else float("inf")
            if word.start >= slot_end + WORD_IN_GAP_S and word.end <= following - WORD_IN_GAP_S:
                return [i] if i + 1 == len(slots) else [i, i + 1]
        return []

    kept: dict[int, list[Segment]] = {i: [] for i in range(len(pack.members))}
    failed: set[int] = set()
    for segment in segments:
        if not segment.words:  # text without word timings: nothing proves whose it is, so nobody's share is sure
            failed.update(range(len(pack.members)))
            continue
        owners = {cell_of(w.start) for w in segment.words}
        beside = [in_gap(w) for w in segment.words]
        if all(beside):  # a segment of words between clips only: a hallucination at a gap, nobody's text
            failed.update(i for members in beside for i in members)
        elif len(owners) > 1 or anomalous(segment):
            failed.update(owners)
        else:  # a member's segment; its last word may reach into the gap (Whisper stretches it over silence)
            kept[owners.pop()].append(segment)
    failed.update(i for i, own in kept.items() if not own)  # it has speech (has_speech), yet got no text
    return Split({i: own for i, own in kept.items() if i not in failed}, failed)


def anomalous(segment: Segment) -> bool:
    """Whisper's word-anomaly rule (openai-whisper and faster-whisper judge hallucinations by it): of the first 8
    words, each improbable one (< 0.15) scores 1, each shorter than 0.133 s scores by how much, each longer than
    2 s by how much; a segment is anomalous at a score of 3, or of about one a word."""
    words = [w for w in segment.words or () if w.word.strip() not in PUNCTUATION][:8]
    if not words:
        return False
    score = 0.0
    for word in words:
        duration = word.end - word.start
        score += (word.probability < 0.15) + max(0.0, 0.133 - duration) * 15 + max(0.0, duration - 2.0)
    return score >= 3 or score + 0.01 >= len(words)


def to_own_time(member: Member, segment: Segment, offset: float, seek: int, keep_words: bool) -> Segment:
    """A packed segment as a segment of the member's own request: times shifted (and clamped) to its audio."""
    words = None
    if keep_words and segment.words:
        words = [w.model_copy(update={"start": round(member.to_own_time(w.start, offset), 3),
                                      "end": round(member.to_own_time(w.end, offset), 3)}) for w in segment.words]
    return segment.model_copy(update={"start": round(member.to_own_time(segment.start, offset), 3),
                                      "end": round(member.to_own_time(segment.end, offset), 3), "seek": seek,
                                      "words": words})
