"""A session's audio at 16 kHz, and where its turns begin and end (OpenAI's ``server_vad`` rules on Silero's
per-frame speech probabilities). Pure: no I/O, no clock; times are sample indices since the session began."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

RATE = 16000


def ms(samples: int) -> int:
    return int(samples * 1000 // RATE)


class AudioTimeline:
    """The session's 16-kHz audio from ``start`` (a sample index) to ``end``: earlier audio has been let go."""

    def __init__(self) -> None:
        self.start = 0
        self._chunks: list[np.ndarray] = []
        self._length = 0

    @property
    def end(self) -> int:
        return self.start + self._length

    def append(self, audio: np.ndarray) -> None:
        if len(audio):
            self._chunks.append(audio.astype(np.float32, copy=False))
            self._length += len(audio)

    def slice(self, begin: int, end: int) -> np.ndarray:
        """Samples ``[begin, end)``, clipped to what is held."""
        begin, end = max(begin, self.start), min(end, self.end)
        if end <= begin:
            return np.zeros(0, dtype=np.float32)
        whole = self._whole()
        return whole[begin - self.start:end - self.start].copy()

    def drop_before(self, index: int) -> None:
        """Let go of the audio before sample ``index``."""
        index = min(max(index, self.start), self.end)
        if index == self.start:
            return
        rest = self._whole()[index - self.start:]
        self._chunks = [rest] if len(rest) else []
        self.start, self._length = index, len(rest)

    def _whole(self) -> np.ndarray:
        if len(self._chunks) != 1:
            self._chunks = [np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)]
        return self._chunks[0]


@dataclass
class TurnEvent:
    """``start``: speech began (``at`` includes the prefix padding); ``pause``: it went quiet at ``at``;
    ``resume``: it went on before the silence was long enough; ``stop``: the turn ended at ``at``."""

    kind: Literal["start", "pause", "resume", "stop"]
    at: int


class TurnDetector:
    """OpenAI's server VAD over per-frame probabilities: speech starts at a frame at or above ``threshold`` (the
    turn begins ``prefix_padding_ms`` earlier); it goes quiet at a frame below ``threshold - 0.15`` (Silero's own
    hysteresis) and a frame at or above ``threshold`` ends the quiet; ``silence_duration_ms`` of quiet ends the
    turn, which then holds the silence, as OpenAI's ``audio_end_ms`` does. After ``pause_ms`` of quiet (at most half
    the silence) a ``pause`` is reported, and a ``resume`` if speech comes back after it: the session decodes the
    turn early at a pause, and a shorter quiet (a comma) costs nothing."""

    def __init__(self, threshold: float, prefix_padding_ms: int, silence_duration_ms: int,
                 frame_samples: int = 512, pause_ms: int = 160) -> None:
        self.threshold = threshold
        self.low = max(threshold - 0.15, 0.01)
        self.prefix = prefix_padding_ms * RATE // 1000
        self.silence = silence_duration_ms * RATE // 1000
        self.pause = min(pause_ms * RATE // 1000, self.silence // 2)
        self.frame = frame_samples
        self.speaking = False
        self.turn_start = 0
        self.quiet_since: int | None = None
        self.paused = False

    def reset(self) -> None:
        self.speaking = False
        self.quiet_since = None
        self.paused = False

    def feed(self, first_sample: int, probs: list[float], floor: int = 0) -> list[TurnEvent]:
        """The probabilities of consecutive frames from ``first_sample`` -> what happened; ``floor``: the earliest
        sample a turn may begin at (audio before it is gone or belongs to an earlier turn)."""
        events: list[TurnEvent] = []
        for i, p in enumerate(probs):
            at = first_sample + i * self.frame
            if not self.speaking:
                if p >= self.threshold:
                    self.speaking, self.quiet_since, self.paused = True, None, False
                    self.turn_start = max(at - self.prefix, floor)
                    events.append(TurnEvent("start", self.turn_start))
                continue
            if p >= self.threshold and self.quiet_since is not None:
                self.quiet_since = None
                if self.paused:
                    self.paused = False
                    events.append(TurnEvent("resume", at))
            elif p < self.low and self.quiet_since is None:
                self.quiet_since = at
            if self.quiet_since is None:
                continue
            quiet = at + self.frame - self.quiet_since
            if quiet >= self.silence:
                self.reset()
                events.append(TurnEvent("stop", at + self.frame))
            elif quiet >= self.pause and not self.paused:
                self.paused = True
                events.append(TurnEvent("pause", at + self.frame))
        return events
