"""Cut a request's audio into windows of at most 30 s for Whisper.

With ``vad_filter`` the windows are built from Silero VAD speech regions (silence
between them is skipped). Without it, long audio is cut at the quietest 100 ms
near each 30 s boundary so that words are rarely split, and ``audible`` drops the
windows with no sound in them: Whisper never decodes silence (which costs a full
window each and is where it hallucinates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.stt.types import SAMPLE_RATE, WINDOW_SECONDS


@dataclass
class Window:
    start: int  # sample index
    end: int
    span: int | None = None  # the request's span it belongs to (``spans``)

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE


def fixed_windows(audio: np.ndarray, window_s: float = WINDOW_SECONDS, search_s: float = 5.0) -> list[Window]:
    total = len(audio)
    size = int(window_s * SAMPLE_RATE)
    if total <= size:
        return [Window(0, total)]
    frame = SAMPLE_RATE // 10
    windows: list[Window] = []
    start = 0
    while total - start > size:
        lo = start + size - int(search_s * SAMPLE_RATE)
        hi = start + size
        segment = audio[lo:hi]
        frames = len(segment) // frame
        energy = np.square(segment[: frames * frame].reshape(frames, frame)).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * frame + frame // 2
        windows.append(Window(start, cut))
        start = cut
    windows.append(Window(start, total))
    return windows


def vad_windows(audio: np.ndarray, window_s: float = WINDOW_SECONDS) -> list[Window]:
    """Speech regions from Silero VAD (bundled with faster-whisper), merged into windows of at most ``window_s``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    regions = get_speech_timestamps(audio, VadOptions(min_silence_duration_ms=500, speech_pad_ms=200))
    windows: list[Window] = []
    size = int(window_s * SAMPLE_RATE)
    for region in regions:
        start, end = int(region["start"]), int(region["end"])
        if windows and end - windows[-1].start <= size:
            windows[-1].end = end
            continue
        while end - start > size:  # one region longer than a window
            windows.extend(fixed_windows(audio[start:end], window_s)[:1])
            windows[-1] = Window(start + windows[-1].start, start + windows[-1].end)
            start = windows[-1].end
        windows.append(Window(start, end))
    return windows


SNAP_S = 0.4            # a boundary two touching spans share moves to the quietest moment this near it
SNAP_FRAME_S = 0.02
TOUCHING_S = 0.05


def span_windows(audio: np.ndarray, spans: list[tuple[float, float]], window_s: float = WINDOW_SECONDS
                 ) -> list[Window]:
    """The windows of ``spans`` (seconds, in time order, clipped to the audio): one per span, a span over
    ``window_s`` cut like long audio. Where two spans touch (one speaker's turn ends as the next begins), their
    shared boundary moves to the quietest ``SNAP_FRAME_S`` within ``SNAP_S`` of it, so a word is not cut in two."""
    total = len(audio)
    bounds = [[min(total, int(start * SAMPLE_RATE)), min(total, int(end * SAMPLE_RATE))] for start, end in spans]
    for left, right in zip(bounds, bounds[1:]):
        if abs(right[0] - left[1]) <= TOUCHING_S * SAMPLE_RATE:
            left[1] = right[0] = _quietest(audio, (left[1] + right[0]) // 2, max(left[0] + 1, 0),
                                           min(right[1] - 1, total))
    windows: list[Window] = []
    for index, (start, end) in enumerate(bounds):
        if end - start < SAMPLE_RATE // 10:  # under 100 ms: nothing Whisper can hear
            continue
        for window in fixed_windows(audio[start:end], window_s):
            windows.append(Window(start + window.start, start + window.end, span=index))
    return windows


def _quietest(audio: np.ndarray, at: int, lowest: int, highest: int) -> int:
    """The middle of the quietest ``SNAP_FRAME_S`` frame within ``SNAP_S`` of sample ``at``, kept inside
    (``lowest``, ``highest``)."""
    frame = int(SNAP_FRAME_S * SAMPLE_RATE)
    lo, hi = max(lowest, at - int(SNAP_S * SAMPLE_RATE)), min(highest, at + int(SNAP_S * SAMPLE_RATE))
    frames = (hi - lo) // frame
    if frames < 2:
        return at
    energy = np.square(audio[lo:lo + frames * frame].reshape(frames, frame)).mean(axis=1)
    return lo + int(np.argmin(energy)) * frame + frame // 2


SILENCE_DBFS = -60.0     # a 100 ms frame quieter than this (RMS) holds no speech, however quiet the recording
MIN_SOUND_FRAMES = 2     # ...and a window needs this many louder frames to be worth decoding


def audible(audio: np.ndarray, windows: list[Window]) -> list[Window]:
    """The windows with sound in them: at least ``MIN_SOUND_FRAMES`` frames of 100 ms above ``SILENCE_DBFS``.

    An energy gate, vectorised over the whole request (milliseconds for an hour of audio): twenty minutes
    of digital silence become no window at all, so nothing is decoded and the text is empty.
    """
    frame = SAMPLE_RATE // 10
    threshold = 10.0 ** (SILENCE_DBFS / 20.0)
    out = []
    for window in windows:
        part = audio[window.start:window.end]
        frames = max(1, len(part) // frame)
        usable = part[: frames * frame] if len(part) >= frame else part
        rms = np.sqrt(np.square(usable.reshape(frames, -1), dtype=np.float64).mean(axis=1))
        if int((rms > threshold).sum()) >= min(MIN_SOUND_FRAMES, frames):
            out.append(window)
    return out
