"""A session's audio at 16 kHz, and where its turns begin and end (OpenAI's ``server_vad`` rules on Silero's
per-frame speech probabilities). Pure: no I/O, no clock; times are sample indices since the session began."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

RATE = 16000
BLOCK = 128          # 8-ms blocks (a Silero frame is 4) for the level that places a turn's end
END_DROP_DB = 30.0   # the speech ends after its last block within this of the turn's loud level (95th percentile)
END_SEARCH = 3       # frames before Silero's last speech frame in which the level may place the end


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
    hysteresis) and a frame at or above ``threshold`` ends the quiet; the quiet is timed from the end of the last
    frame at or above ``threshold`` (the frames of the hysteresis between count as quiet, as Silero's own
    ``min_silence_duration_ms`` does), or, given the audio, from the end of the last 8-ms block of that frame and
    the ``END_SEARCH`` before it whose level is within ``END_DROP_DB`` of the turn's loud level: Silero's
    probabilities fall 90-150 ms after the sound does (its context), and the level places the end within a
    block, or at Silero's frame when noise keeps the level up; ``silence_duration_ms`` of quiet ends the turn,
    which then holds the silence, as OpenAI's ``audio_end_ms`` does. After ``pause_ms`` of quiet (at most half
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
        self.loud_until = 0  # the end of the last frame at or above the threshold
        self.paused = False
        self.levels: list[float] = []  # dB of the turn's 8-ms blocks, from ``levels_from``
        self.levels_from = 0

    @property
    def quiet(self) -> bool:
        """In a turn, and quiet: the turn may end within ``silence_duration_ms``."""
        return self.speaking and self.quiet_since is not None

    def reset(self) -> None:
        self.speaking = False
        self.quiet_since = None
        self.paused = False

    def feed(self, first_sample: int, probs: list[float], floor: int = 0,
             audio: np.ndarray | None = None) -> list[TurnEvent]:
        """The probabilities of consecutive frames from ``first_sample`` -> what happened; ``floor``: the earliest
        sample a turn may begin at (audio before it is gone or belongs to an earlier turn); ``audio``: those
        frames' samples, to place the end of speech by its level."""
        events: list[TurnEvent] = []
        levels = _block_levels(audio) if audio is not None and not self.frame % BLOCK else None
        for i, p in enumerate(probs):
            at = first_sample + i * self.frame
            if not self.speaking:
                if p >= self.threshold:
                    self.speaking, self.quiet_since, self.paused = True, None, False
                    self.loud_until = at + self.frame
                    self.turn_start = max(at - self.prefix, floor)
                    self.levels, self.levels_from = [], at
                    self._note_levels(levels, i, at)
                    events.append(TurnEvent("start", self.turn_start))
                continue
            self._note_levels(levels, i, at)
            if p >= self.threshold:
                self.loud_until = at + self.frame
            if p >= self.threshold and self.quiet_since is not None:
                self.quiet_since = None
                if self.paused:
                    self.paused = False
                    events.append(TurnEvent("resume", at))
            elif p < self.low and self.quiet_since is None:
                self.quiet_since = max(self._speech_end(), self.turn_start)
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

    def _note_levels(self, levels: np.ndarray | None, i: int, at: int) -> None:
        """Keep frame ``i``'s block levels, when they follow on from those kept (they do unless audio was lost)."""
        per_frame = self.frame // BLOCK
        if levels is not None and at == self.levels_from + len(self.levels) * BLOCK:
            self.levels += levels[i * per_frame:(i + 1) * per_frame].tolist()

    def _speech_end(self) -> int:
        """Where the turn's speech ended: the end of Silero's last speech frame, or earlier where the level says
        so (the last block within ``END_DROP_DB`` of the turn's loud level, in the frames just before)."""
        end = self.loud_until
        last = (end - self.levels_from) // BLOCK  # blocks held up to Silero's end
        if last > len(self.levels) or last <= 0:
            return end
        levels = np.asarray(self.levels[:last])
        loud = float(np.percentile(levels, 95)) - END_DROP_DB
        first = max(0, last - (END_SEARCH + 1) * (self.frame // BLOCK))
        above = np.flatnonzero(levels[first:last] >= loud)
        return self.levels_from + (first + (int(above[-1]) + 1 if len(above) else 0)) * BLOCK


def _block_levels(audio: np.ndarray) -> np.ndarray:
    """dBFS of each whole 8-ms block."""
    blocks = audio[:len(audio) // BLOCK * BLOCK].reshape(-1, BLOCK).astype(np.float64)
    return 10 * np.log10((blocks ** 2).mean(axis=1) + 1e-12)
