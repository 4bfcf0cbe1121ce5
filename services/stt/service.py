"""Transcription of whole requests on top of the chunk batcher.

A request is cut into windows and admitted as a whole (all its windows reserved in the
batcher); its first window goes through the batcher alone (it settles the language when none
was given), the rest follow in a sliding window of concurrent submissions, so windows of many
requests share batches.
Results come back in order, window by window, which is what streaming sends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from services.core.contracts.errors import InvalidRequest, RequestTimeout
from services.core.contracts.wire import Segment, SttTask, TranscriptionResult, Word
from services.core.http.service_app import LoadedModel
from services.core.runtime.in_order import in_order
from services.core.tasks.jobs import ChunkJob, ChunkResult
from services.stt.chunking import Window, audible, fixed_windows, span_windows, vad_windows
from services.stt.types import SAMPLE_RATE


@dataclass
class TranscribeOptions:
    task: SttTask = "transcribe"
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    vad_filter: bool = False
    fit_context: bool = False
    logprobs: bool = False
    languages: tuple[str, ...] | None = None  # detection picks among these (no ``language``)
    spans: list[tuple[float, float]] | None = None  # decode only these, each on its own (diarization's turns)


async def transcribe_windows(model: LoadedModel, audio: np.ndarray, opts: TranscribeOptions
                             ) -> AsyncIterator[ChunkResult]:
    check_request(model, opts)
    deadline = time.monotonic() + model.spec.batching.timeout_s
    if opts.spans is not None:
        windows = span_windows(audio, opts.spans)
    elif opts.vad_filter:
        windows = await asyncio.to_thread(vad_windows, audio)
    else:
        windows = fixed_windows(audio)
        if model.spec.limits.skip_silence:
            windows = audible(audio, windows)  # silent windows are never decoded
    if not windows:
        return

    def job(window: Window, language: str | None, prompt: str | None) -> ChunkJob:
        return ChunkJob(audio=audio[window.start:window.end], offset=window.offset, task=opts.task,
                        language=language, prompt=prompt, temperature=opts.temperature,
                        word_timestamps=opts.word_timestamps, fit_context=opts.fit_context,
                        logprobs=opts.logprobs, languages=opts.languages)

    # the whole request is admitted at once: every window counted ahead of later requests (429 if it cannot finish)
    with model.batcher.reserve(len(windows), deadline=deadline) as work:
        async def run(window: Window, language: str | None, prompt: str | None) -> ChunkResult:
            try:
                result = await work.submit(job(window, language, prompt))
                _count_packing(model, result)
                tail = _unheard_tail(audio, window, result)
                if tail is not None:  # Whisper stopped early: decode the rest, as sequential seeking would
                    extra = await work.submit(job(tail, language or result.language, None))
                    _count_packing(model, extra)
                    result.segments.extend(extra.segments)
                for segment in result.segments:
                    segment.span = window.span
                return result
            except RequestTimeout:
                raise _past_deadline(model, audio, len(windows)) from None

        if opts.spans is not None:  # each span on its own: its own language, the prompt for every span
            async for result in in_order(windows, lambda w: run(w, opts.language, opts.prompt),
                                         max(1, model.spec.batching.max_batch_size)):
                yield result
            return
        first = await run(windows[0], opts.language, opts.prompt)
        yield first
        language = opts.language or first.language
        async for result in in_order(windows[1:], lambda w: run(w, language, None),
                                     max(1, model.spec.batching.max_batch_size)):
            yield result


def check_request(model: LoadedModel, opts: TranscribeOptions) -> None:
    """The backend's refusals, before any audio is queued: of the task and language, and of each of
    ``languages`` (a 400 naming ``languages``)."""
    model.backend.check_request(opts.task, opts.language)
    for code in opts.languages or ():
        try:
            model.backend.check_request(opts.task, code)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param="languages", code=exc.code) from None


def _count_packing(model: LoadedModel, result: ChunkResult) -> None:
    if result.packed:
        model.metrics.packed_windows.labels(model.spec.name).inc()
    if result.pack_failed:
        model.metrics.pack_fallbacks.labels(model.spec.name).inc()
    for reason in result.fallbacks:  # Whisper's guards (stt/guards.py FALLBACK_REASONS)
        model.metrics.stt_fallbacks.labels(model.spec.name, reason).inc()


def _past_deadline(model: LoadedModel, audio: np.ndarray, windows: int) -> RequestTimeout:
    return RequestTimeout(
        f"the transcription by '{model.spec.name}' passed its deadline (the client's, or "
        f"batching.timeout_s = {model.spec.batching.timeout_s:g} s) before its {windows} windows "
        f"({len(audio) / SAMPLE_RATE:.0f} s of audio) were "
        f"decoded; send shorter audio")


MIN_TAIL_S = 1.0
SPEECH_RMS = 0.02


def _unheard_tail(audio: np.ndarray, window: Window, result: ChunkResult) -> Window | None:
    """The part of a window after the last segment, when it is long enough and loud enough to hold speech."""
    if not result.segments:
        return None
    last_end = int(max(s.end for s in result.segments) * SAMPLE_RATE)
    if window.end - last_end < MIN_TAIL_S * SAMPLE_RATE:
        return None
    tail = audio[last_end:window.end]
    frame = SAMPLE_RATE // 10
    frames = len(tail) // frame
    rms = np.sqrt(np.square(tail[: frames * frame].reshape(frames, frame)).mean(axis=1))
    if (rms > SPEECH_RMS).sum() < 3:
        return None
    return Window(last_end, window.end)


def assemble(model_name: str, opts: TranscribeOptions, audio: np.ndarray, chunks: list[ChunkResult]
             ) -> TranscriptionResult:
    segments: list[Segment] = []
    for chunk in chunks:
        for segment in chunk.segments:
            segments.append(segment.model_copy(update={"id": len(segments)}))
    words: list[Word] | None = None
    if opts.word_timestamps:
        words = [w for s in segments for w in (s.words or [])]
    first = chunks[0] if chunks else None
    return TranscriptionResult(
        model=model_name, task=opts.task,
        language=(first.language if first else (opts.language or "en")),
        language_probability=(first.language_probability if first else 0.0),
        duration=round(len(audio) / SAMPLE_RATE, 3),
        text="".join(s.text for s in segments).strip(),
        segments=segments, words=words)
