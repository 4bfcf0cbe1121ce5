"""Synthesis of whole requests: sentences through the batcher, in order, as soon as each is ready."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator

import numpy as np
from services.core.errors import InvalidRequest, RequestTimeout
from services.core.service_app import LoadedModel
from services.core.wire import has_words
from services.tts.limits import check_work
from services.tts.text import split_sentences
from services.tts.types import SynthJob


async def synthesize_sentences(model: LoadedModel, text: str, voice: str, language: str, speed: float
                               ) -> AsyncIterator[np.ndarray]:
    """The sentences' audio in order. The work is estimated first (400 past ``limits.max_speech_seconds``);
    one deadline (``batching.timeout_s``) bounds the whole request, every sentence included (504 past it)."""
    deadline = time.monotonic() + model.spec.batching.timeout_s
    sentences = [s for s in split_sentences(text) if has_words(s)]  # "!!!" alone would be a blip, or nothing
    if not sentences:
        raise InvalidRequest("'input' has no text to speak", param="input")
    await check_work(model, sentences, voice, speed)
    batcher = model.batcher
    limit = max(2, model.spec.batching.max_batch_size * model.spec.batching.instances)

    async def one(sentence: str, admitted: bool) -> np.ndarray:
        # a request's first sentence overtakes later sentences of running requests: time to first audio
        try:
            return await batcher.submit(SynthJob(sentence, voice, language, speed), deadline=deadline,
                                        wait_for_space=admitted, priority=1 if admitted else 0)
        except RequestTimeout:
            raise RequestTimeout(
                f"the synthesis by '{model.spec.name}' passed its deadline (the client's, or "
                f"batching.timeout_s = {model.spec.batching.timeout_s:g} s) before its {len(sentences)} sentences were spoken; send shorter text") from None

    def submit(sentence: str, admitted: bool) -> asyncio.Future:
        return asyncio.ensure_future(one(sentence, admitted))

    # the first sentence decides admission (429 when the queue is full); the rest are admitted work
    in_flight: list[asyncio.Future] = [submit(sentences[0], admitted=False)]
    next_index = 1
    try:
        while in_flight:
            while next_index < len(sentences) and len(in_flight) < limit:
                in_flight.append(submit(sentences[next_index], admitted=True))
                next_index += 1
            yield await in_flight.pop(0)
    finally:
        for task in in_flight:
            task.cancel()
