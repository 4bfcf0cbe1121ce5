"""Early decoding: the transcription of a command starts in the silence after its speech, before audio-stop.

A voice assistant's client (Home Assistant's VAD) ends the audio only after it has heard most of a second of
silence. The adapter watches the audio as it arrives, in 20 ms frames: once the speech is followed by
``early_decode_ms`` of quiet, it sends the audio so far to the router. If no sound comes after that point, the
answer at audio-stop is that decode, already done or under way (the trailing silence it lacks gives Whisper no
words); if speech resumes, the early decode is cancelled (the router drops its queued work) and a later quiet
starts another. A frame is quiet when it is 30 dB under the loudest frame so far, or under -60 dBFS; audio that is
never that quiet (steady noise) is simply decoded at audio-stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import numpy as np

from services.core.audio import pcm16_to_float
from services.wyoming.errors import WyomingError
from services.wyoming.router_api import TranscriptDelta, TranscriptDone

FRAME_S = 0.02
QUIET_UNDER_PEAK_DB = 30.0
QUIET_FLOOR_DBFS = -60.0
log = logging.getLogger("harmony.wyoming")
Events = list[TranscriptDelta | TranscriptDone]


class QuietTracker:
    """Where the last loud 20 ms frame of 16-bit mono PCM ended, and how long the quiet since then is."""

    def __init__(self, rate: int) -> None:
        self.frame = max(1, int(rate * FRAME_S))
        self.samples = 0            # samples classified so far (whole frames)
        self.peak_db = -math.inf
        self.loud_end = 0           # the sample after the last loud frame; 0: no sound yet

    def update(self, pcm: bytes | bytearray) -> None:
        whole = (len(pcm) // 2 - self.samples) // self.frame * self.frame
        if whole <= 0:
            return
        samples = pcm16_to_float(pcm, count=whole, offset=self.samples * 2)
        rms = np.sqrt((samples.reshape(-1, self.frame) ** 2).mean(axis=1))
        levels = 20 * np.log10(np.maximum(rms, 1e-9))
        for index, level in enumerate(levels):
            self.peak_db = max(self.peak_db, float(level))
            if level >= QUIET_FLOOR_DBFS and level >= self.peak_db - QUIET_UNDER_PEAK_DB:
                self.loud_end = self.samples + (index + 1) * self.frame
        self.samples += whole

    @property
    def quiet_samples(self) -> int:
        return self.samples - self.loud_end if self.loud_end else 0


class EarlyDecode:
    """The one early decode of a transcribe, if any: the audio length it covers and its task."""

    def __init__(self, rate: int, after_ms: int, decode: Callable[[int], Coroutine[Any, Any, Events]]) -> None:
        self.tracker = QuietTracker(rate)
        self.after_samples = int(rate * after_ms / 1000)
        self.decode = decode
        self.covered = 0            # samples the running decode covers
        self.task: asyncio.Task[Events] | None = None

    def after_audio(self, pcm: bytes | bytearray) -> None:
        """Look at the audio added: cancel a decode that new sound made stale; start one after enough quiet."""
        self.tracker.update(pcm)
        if self.task is not None and self.tracker.loud_end > self.covered:
            log.debug("early decode of %.2f s is stale: speech went on", self.covered / self.tracker.frame * FRAME_S)
            self.cancel()
        if self.task is None and self.after_samples > 0 and self.tracker.quiet_samples >= self.after_samples:
            self.covered = self.tracker.samples
            self.task = asyncio.create_task(self.decode(self.covered * 2), name="wyoming early decode")
            self.task.add_done_callback(_retrieve)

    async def result(self, pcm: bytes | bytearray) -> Events | None:
        """At audio-stop: the early decode's events when nothing loud came after it (None: decode it all)."""
        self.tracker.update(pcm)
        task, self.task = self.task, None
        if task is None:
            return None
        if self.tracker.loud_end > self.covered:
            task.cancel()
            return None
        log.debug("early decode of %.2f s answers (%s at audio-stop)", self.covered / self.tracker.frame * FRAME_S,
                  "done" if task.done() else "running")
        try:
            return await task
        except WyomingError as exc:
            log.debug("early decode failed (%s): decoding all the audio", exc.code)
            return None  # (a refusal under load, say) the whole audio is decoded the ordinary way

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None


def _retrieve(task: asyncio.Task) -> None:
    """A decode that failed and was never awaited (cancelled as stale, or the connection left) is not an error."""
    if not task.cancelled():
        task.exception()


async def collect(events: AsyncIterator[TranscriptDelta | TranscriptDone]) -> Events:
    out: Events = []
    with contextlib.suppress(StopAsyncIteration):
        async for event in events:
            out.append(event)
    return out
