"""Meetings for bench/diarization.py: several of the engine's own voices taking turns, with known truth.

The timeline is pure and seeded (``plan_meeting``: who speaks when, the pauses and the overlaps, from the lengths
of the speech each turn says); the speech comes from the engine's ``/v1/audio/speech`` (``Speech``), trimmed to its
loud span so a turn's reference times are where its sound is.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

import httpx
import numpy as np
import soundfile
import soxr
from pyannote.core import Annotation, Segment, Timeline

from tests.speech import SENTENCES

RATE = 16000  # the meetings' sample rate
PEAK = 0.5  # each turn's peak: two overlapping turns stay below full scale
SENTENCE_GAP_S = 0.25  # between the sentences of one turn (inside the turn in the reference)
TURN_SECONDS = (1.0, 15.0)
PAUSE_SECONDS = (0.1, 1.0)
OVERLAP_SECONDS = (0.2, 0.5)
OVERLAP_SHARE = 0.25  # the share of turns that start before the previous one ends

ENGLISH = [
    "Yes.", "Right, okay.", "I agree with that.", "Good point.", "Let me check.",
    *SENTENCES,  # the tests' known sentences
    "We should move the launch to next week and tell the customers today.",
    "The budget for the second quarter is smaller than we planned in January.",
]
ENGLISH_REFERENCE = [
    "Hello, this is a short sample of my voice for the meeting.",
    "I usually join these calls from the office on the third floor.",
]
JAPANESE = [
    "はい。", "そうですね。", "わかりました。", "いいと思います。", "ちょっと確認します。",
    "今日はいい天気ですね。",
    "毎朝、パン屋さんは駅の近くの小さな店を開けます。",
    "来週の会議の資料を金曜日までに準備してください。",
    "新しい製品の発表は来月の初めに予定しています。",
    "お客様からの問い合わせが先月より少し増えました。",
    "この計画については、もう少し時間をかけて話し合いましょう。",
    "予算は四月に決めた金額よりも少なくなりそうです。",
    "駅から会社までは歩いて十五分ぐらいかかります。",
]
JAPANESE_REFERENCE = [
    "こんにちは、これは会議のための私の声のサンプルです。",
    "いつもは三階の事務所からこの会議に参加しています。",
]


@dataclass(frozen=True)
class Voice:
    name: str  # the speaker's name in the meeting (and in known_speaker_names[])
    voice: str  # the engine's voice id
    japanese: bool = False

    @property
    def lines(self) -> list[str]:
        return JAPANESE if self.japanese else ENGLISH

    @property
    def reference_lines(self) -> list[str]:
        return JAPANESE_REFERENCE if self.japanese else ENGLISH_REFERENCE


# every voice clearly different: a neural English man, a formant-synthesis voice, Kokoro's Japanese women and man
VOICES = [
    Voice("joe", "joe"),
    Voice("espeak", "espeak-en-us"),
    Voice("alpha", "kokoro-jf_alpha", japanese=True),
    Voice("kumo", "kokoro-jm_kumo", japanese=True),
    Voice("nezumi", "kokoro-jf_nezumi", japanese=True),
    Voice("tebukuro", "kokoro-jf_tebukuro", japanese=True),
    Voice("gongitsune", "kokoro-jf_gongitsune", japanese=True),
]


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float
    lines: tuple[int, ...]  # indices into the speaker's voice's lines


@dataclass
class Meeting:
    speakers: list[Voice]
    turns: list[Turn]
    audio: np.ndarray  # mono float32 at RATE
    known: list[Voice] = field(default_factory=list)  # speakers given by a reference sample
    impostor: Voice | None = None  # a voice not in the meeting, given by a reference sample too

    @property
    def duration(self) -> float:
        return len(self.audio) / RATE

    def reference(self) -> Annotation:
        return reference_annotation(self.turns)


def speaker_order(count: int, turns: int, rng: random.Random) -> list[int]:
    """Who speaks each turn: never the same speaker twice in a row, everyone at least ``turns // count`` times."""
    order: list[int] = []
    while len(order) < turns:
        round_ = list(range(count))
        rng.shuffle(round_)
        if order and round_[0] == order[-1]:
            round_.append(round_.pop(0))
        order += round_
    return order[:turns]


def pick_lines(lengths: list[float], target: float, rng: random.Random,
               shortest: float = TURN_SECONDS[0]) -> list[int]:
    """Lines of one speaker whose speech (with the gaps between them) comes closest to ``target`` seconds without
    passing it, then the shortest others until the turn lasts ``shortest`` seconds."""
    chosen: list[int] = []
    for index in rng.sample(range(len(lengths)), len(lengths)):
        if turn_length([*chosen, index], lengths) <= target:
            chosen.append(index)
    for index in sorted(range(len(lengths)), key=lengths.__getitem__):
        if chosen and turn_length(chosen, lengths) >= shortest:
            break
        if index not in chosen:
            chosen.append(index)
    return chosen


def gaps(turns: int, rng: random.Random, overlap_share: float = OVERLAP_SHARE) -> list[float]:
    """The time from each turn's end to the next one's start: a pause, or (negative) an overlap."""
    out = []
    for _ in range(turns - 1):
        if rng.random() < overlap_share:
            out.append(-rng.uniform(*OVERLAP_SECONDS))
        else:
            out.append(rng.uniform(*PAUSE_SECONDS))
    return out


def timeline(durations: list[float], between: list[float], lead_in: float = 0.5) -> list[tuple[float, float]]:
    """Each turn's start and end, the first after ``lead_in`` seconds of silence."""
    spans = []
    start = lead_in
    for i, duration in enumerate(durations):
        spans.append((start, start + duration))
        if i < len(between):
            start = start + duration + between[i]
    return spans


def turn_length(lines: list[int], lengths: list[float]) -> float:
    return sum(lengths[i] for i in lines) + SENTENCE_GAP_S * (len(lines) - 1)


def plan_meeting(speakers: list[str], lengths: dict[str, list[float]], turns: int,
                 rng: random.Random) -> list[Turn]:
    """The turns of a meeting: who, which lines, when (from the lines' speech lengths, in seconds)."""
    order = speaker_order(len(speakers), turns, rng)
    chosen = [pick_lines(lengths[speakers[who]], rng.uniform(*TURN_SECONDS), rng) for who in order]
    durations = [turn_length(lines, lengths[speakers[who]]) for who, lines in zip(order, chosen)]
    spans = timeline(durations, gaps(turns, rng))
    return [Turn(speakers[who], start, end, tuple(lines))
            for who, lines, (start, end) in zip(order, chosen, spans)]


def reference_annotation(turns: list[Turn]) -> Annotation:
    """The truth as pyannote sees it: one segment per turn, labelled with its speaker."""
    truth = Annotation()
    for i, turn in enumerate(turns):
        truth[Segment(turn.start, turn.end), i] = turn.speaker
    return truth


def uem(duration: float) -> Timeline:
    return Timeline([Segment(0.0, duration)])


def loud_span(audio: np.ndarray, rate: int) -> np.ndarray:
    """The audio from its first to its last 10-ms frame above -40 dB of its peak."""
    hop = rate // 100
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    level = np.sqrt((frames ** 2).mean(axis=1))
    loud = np.flatnonzero(level > max(float(level.max()), 1e-9) * 0.01)
    if loud.size == 0:
        return audio
    return audio[loud[0] * hop:(loud[-1] + 1) * hop]


class Speech:
    """The engine's speech for (voice, text), trimmed to its loud span at RATE with peak PEAK; cached."""

    def __init__(self, url: str, model: str = "tts-1", timeout: float = 300.0) -> None:
        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.model = model
        self.cache: dict[tuple[str, str], np.ndarray] = {}

    def __call__(self, voice: Voice, text: str) -> np.ndarray:
        key = (voice.voice, text)
        if key not in self.cache:
            answer = self.http.post("/v1/audio/speech", json={"model": self.model, "voice": voice.voice,
                                                              "input": text, "response_format": "wav"})
            answer.raise_for_status()
            audio, rate = soundfile.read(io.BytesIO(answer.content), dtype="float32")
            audio = loud_span(soxr.resample(audio, rate, RATE).astype(np.float32), RATE)
            self.cache[key] = (audio * (PEAK / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32)
        return self.cache[key]

    def lengths(self, voice: Voice) -> list[float]:
        return [len(self(voice, line)) / RATE for line in voice.lines]

    def turn(self, voice: Voice, lines: tuple[int, ...]) -> np.ndarray:
        gap = np.zeros(int(SENTENCE_GAP_S * RATE), dtype=np.float32)
        parts: list[np.ndarray] = []
        for i in lines:
            parts += [gap, self(voice, voice.lines[i])] if parts else [self(voice, voice.lines[i])]
        return np.concatenate(parts)

    def reference_sample(self, voice: Voice, longest: float = 9.5) -> np.ndarray:
        """2 to 10 s of the voice saying lines that are not in any meeting (known_speaker_references[])."""
        gap = np.zeros(int(SENTENCE_GAP_S * RATE), dtype=np.float32)
        sample = np.concatenate([self(voice, voice.reference_lines[0]), gap, self(voice, voice.reference_lines[1])])
        return sample[: int(longest * RATE)]

    def close(self) -> None:
        self.http.close()


def mix(turns: list[Turn], voices: dict[str, Voice], speech: Speech, tail: float = 0.5) -> np.ndarray:
    """The meeting's audio: each turn's speech added at its start (overlaps add up)."""
    end = max(turn.end for turn in turns) + tail
    audio = np.zeros(int(np.ceil(end * RATE)), dtype=np.float32)
    for turn in turns:
        said = speech.turn(voices[turn.speaker], turn.lines)
        at = int(round(turn.start * RATE))
        audio[at:at + len(said)] += said[: len(audio) - at]
    return audio


def make_meeting(count: int, rng: random.Random, speech: Speech, turns_per_speaker: int = 3) -> Meeting:
    """A meeting of ``count`` voices drawn from VOICES; all but one of them known by a reference sample, and one
    voice that is not in the meeting (the impostor) given a reference too."""
    chosen = rng.sample(VOICES, count)
    voices = {voice.name: voice for voice in chosen}
    lengths = {voice.name: speech.lengths(voice) for voice in chosen}
    turns = plan_meeting([voice.name for voice in chosen], lengths, turns_per_speaker * count, rng)
    # the plan's times are the mixed speech's own lengths
    for turn in turns:
        assert abs(len(speech.turn(voices[turn.speaker], turn.lines)) / RATE - (turn.end - turn.start)) < 1e-3
    others = [voice for voice in VOICES if voice not in chosen]
    return Meeting(chosen, turns, mix(turns, voices, speech), known=chosen[: max(1, count - 1)],
                   impostor=rng.choice(others) if others else None)
