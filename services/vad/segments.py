"""Speech segments from per-frame speech probabilities, with Silero VAD's rules (``get_speech_timestamps``).

A segment opens at the first frame whose probability reaches ``threshold``. Once
open, frames below ``neg_threshold`` (default ``threshold - 0.15``, at least
0.01) start a silence; a silence that lasts ``min_silence_duration_ms`` closes
the segment where the silence began, and a probability back at ``threshold``
cancels it. Frames between the two thresholds keep whatever state there is
(hysteresis). Closed segments not longer than ``min_speech_duration_ms`` are
dropped. A segment that grows past ``max_speech_duration_s`` is cut at the
longest silence (over 98 ms) inside it and goes on after it, or, without one,
cut right there. Finally every segment is widened by ``speech_pad_ms`` on both
sides; where two segments are closer than twice the pad, the gap between them
is split in the middle instead.

Everything is computed in samples (like Silero) and returned in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.core.contracts.wire import VadParams

SAMPLE_RATE = 16000
FRAME_SAMPLES = 512
MIN_SILENCE_AT_MAX_SPEECH_MS = 98
GAP_S = 0.05  # silence put between the pieces of speech that cut_speech joins


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    min_speech_duration_ms: float = 250
    min_silence_duration_ms: float = 100
    speech_pad_ms: float = 30
    max_speech_duration_s: float = math.inf
    neg_threshold: float | None = None


def options_of(params: VadParams) -> VadOptions:
    """The segmentation options of a request (``max_speech_duration_s`` unset: no limit)."""
    return VadOptions(threshold=params.threshold, min_speech_duration_ms=params.min_speech_duration_ms,
                      min_silence_duration_ms=params.min_silence_duration_ms, speech_pad_ms=params.speech_pad_ms,
                      max_speech_duration_s=params.max_speech_duration_s or math.inf)


def cut_speech(audio: np.ndarray, rate: int, segments: list[tuple[float, float]] | None) -> np.ndarray:
    """The speech in ``audio``: the segments joined with short gaps (all of it when no segments are given)."""
    if segments is None:
        return audio
    return join_speech([audio[int(start * rate): int(end * rate)] for start, end in segments], rate)


def join_speech(pieces: list[np.ndarray], rate: int) -> np.ndarray:
    """Pieces of speech joined with ``GAP_S`` of silence between them (empty pieces left out)."""
    gap = np.zeros(int(GAP_S * rate), dtype=np.float32)
    parts = [p for piece in pieces if piece.size for p in (piece, gap)]
    return np.concatenate(parts[:-1]).astype(np.float32) if parts else np.zeros(0, dtype=np.float32)


def speech_ranges(probs: Sequence[float] | np.ndarray, num_samples: int | None = None, *, threshold: float = 0.5,
                  min_speech_duration_ms: float = 250, min_silence_duration_ms: float = 100,
                  speech_pad_ms: float = 30, max_speech_duration_s: float = math.inf,
                  neg_threshold: float | None = None, sample_rate: int = SAMPLE_RATE,
                  frame_samples: int = FRAME_SAMPLES) -> list[tuple[int, int]]:
    """Speech as ``(start, end)`` sample ranges, from one probability per ``frame_samples`` frame.

    ``num_samples`` is the length of the audio (default: a whole number of frames).
    """
    if num_samples is None:
        num_samples = len(probs) * frame_samples
    if neg_threshold is None:
        neg_threshold = max(threshold - 0.15, 0.01)
    per_ms = sample_rate / 1000
    min_speech = min_speech_duration_ms * per_ms
    min_silence = min_silence_duration_ms * per_ms
    pad = speech_pad_ms * per_ms
    max_speech = sample_rate * max_speech_duration_s - frame_samples - 2 * pad
    min_cut_silence = MIN_SILENCE_AT_MAX_SPEECH_MS * per_ms

    ranges: list[tuple[int, int]] = []
    start: int | None = None            # start of the open segment (None: no segment is open)
    silence_from: int | None = None     # where the silence inside the open segment began
    cut_points: list[tuple[int, int]] = []  # (silence start, length) of silences the segment could be cut at

    for i, p in enumerate(probs):
        position = i * frame_samples
        if p >= threshold and silence_from is not None:  # speech resumes: the silence was a pause
            if position - silence_from > min_cut_silence:
                cut_points.append((silence_from, position - silence_from))
            silence_from = None
        if start is None:
            if p >= threshold:
                start = position
            continue
        if position - start > max_speech:
            if cut_points:
                cut, length = max(cut_points, key=lambda c: c[1])  # the longest pause; the first of equals
                ranges.append((start, cut))
                start = cut + length
            else:
                ranges.append((start, position))
                start = None
            silence_from, cut_points = None, []
            if start is None:
                continue
        if p < neg_threshold:
            if silence_from is None:
                silence_from = position
            if position - silence_from >= min_silence:
                if silence_from - start > min_speech:
                    ranges.append((start, silence_from))
                start, silence_from, cut_points = None, None, []
    if start is not None and num_samples - start > min_speech:
        ranges.append((start, num_samples))
    return _pad(ranges, pad, num_samples)


def _pad(ranges: list[tuple[int, int]], pad: float, num_samples: int) -> list[tuple[int, int]]:
    if not ranges:
        return []
    starts = [s for s, _ in ranges]
    ends = [e for _, e in ranges]
    starts[0] = int(max(0, starts[0] - pad))
    for i in range(len(ranges) - 1):
        gap = starts[i + 1] - ends[i]
        if gap < 2 * pad:  # too close to pad both: split the gap between them
            ends[i] += int(gap // 2)
            starts[i + 1] = int(max(0, starts[i + 1] - gap // 2))
        else:
            ends[i] = int(min(num_samples, ends[i] + pad))
            starts[i + 1] = int(max(0, starts[i + 1] - pad))
    ends[-1] = int(min(num_samples, ends[-1] + pad))
    return list(zip(starts, ends))


def speech_segments(probs: Sequence[float] | np.ndarray, num_samples: int | None = None,
                    options: VadOptions = VadOptions(), sample_rate: int = SAMPLE_RATE,
                    frame_samples: int = FRAME_SAMPLES) -> list[dict[str, float]]:
    """Speech as ``[{"start": seconds, "end": seconds}, ...]`` (millisecond resolution)."""
    ranges = speech_ranges(probs, num_samples, threshold=options.threshold,
                           min_speech_duration_ms=options.min_speech_duration_ms,
                           min_silence_duration_ms=options.min_silence_duration_ms,
                           speech_pad_ms=options.speech_pad_ms, max_speech_duration_s=options.max_speech_duration_s,
                           neg_threshold=options.neg_threshold, sample_rate=sample_rate, frame_samples=frame_samples)
    return [{"start": round(s / sample_rate, 3), "end": round(e / sample_rate, 3)} for s, e in ranges]
