"""The bound on synthesis work per request: speech estimated from phonemes, refused before it is synthesized.

Characters say little about cost: 400 kanji read one by one are a minute of speech, an emoji is spoken
as its name ("grinning face"), and "A. A. A. ..." is a sentence (and its pause) per letter. So each
backend estimates the seconds of speech a sentence makes from its own phonemes (after its text
normalisation, at the request's speed); the sentences are estimated in turn, in a worker thread,
and the request is refused (400 ``input_too_long``) as soon as their sum passes the model's
``limits.max_speech_seconds``, before any sentence is synthesized.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from services.core.contracts.errors import InvalidRequest
from services.core.http.service_app import LoadedModel

# A backend without an estimate (a plugin) is charged by characters, at a brisk English reading pace.
FALLBACK_CHARS_PER_SECOND = 15.0


@runtime_checkable
class SpeechEstimator(Protocol):
    """Optional for a TTS backend: about how many seconds of speech ``text`` makes, without synthesizing it."""

    def speech_seconds(self, text: str, voice: str, speed: float = 1.0) -> float: ...


class InputTooLong(InvalidRequest):
    default_code = "input_too_long"


def estimate(backend: object, sentences: list[str], voice: str, speed: float, limit: float) -> list[float]:
    """Estimated seconds of each sentence; stops at the first sentence that takes the sum past ``limit``."""
    seconds: list[float] = []
    for sentence in sentences:
        if isinstance(backend, SpeechEstimator):
            seconds.append(backend.speech_seconds(sentence, voice, speed))
        else:
            seconds.append(len(sentence) / FALLBACK_CHARS_PER_SECOND / speed)
        if sum(seconds) > limit:
            break
    return seconds


async def check_work(model: LoadedModel, sentences: list[str], voice: str, speed: float) -> list[float]:
    """The estimated seconds of speech of each sentence; InputTooLong (400) past the model's limit, and 400
    ``nothing_to_speak`` when the voice has no phoneme for any of it (emoji or Latin letters to Kokoro)."""
    limit = model.spec.limits.speech_seconds()
    seconds = await asyncio.to_thread(estimate, model.backend, sentences, voice, speed, limit)
    total, counted = sum(seconds), len(seconds)
    if total <= 0:
        raise InvalidRequest(f"'input' has nothing model '{model.spec.name}' can speak: its text normalisation "
                             f"leaves no phoneme (a voice of another language may read it)", param="input",
                             code="nothing_to_speak")
    if total <= limit:
        return seconds
    chars = sum(len(s) for s in sentences[:counted])
    fits = max(1, int(chars * limit / total * 0.9))
    part = "it" if counted == len(sentences) else f"its first {counted} of {len(sentences)} sentences"
    raise InputTooLong(
        f"'input' is more speech than one request may make: {part} would take about {total:.0f} s of speech "
        f"(estimated from the phonemes, at speed {speed:g}), and model '{model.spec.name}' makes at most "
        f"{limit:g} s per request (limits.max_speech_seconds). Split the text into several requests of at most "
        f"about {fits} characters each, at sentence ends.", param="input")
