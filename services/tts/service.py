"""Synthesis of whole requests: sentences through the batcher, in order, as soon as each is ready."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

import numpy as np
from services.core.errors import InvalidRequest
from services.core.service_app import LoadedModel
from services.core.wire import has_words
from services.tts.text import split_sentences
from services.tts.types import SynthJob


async def synthesize_sentences(model: LoadedModel, text: str, voice: str, language: str, speed: float
                               ) -> AsyncIterator[np.ndarray]:
    sentences = [s for s in split_sentences(text) if has_words(s)]  # "!!!" alone would be a blip, or nothing
    if not sentences:
        raise InvalidRequest("'input' has no text to speak", param="input")
    batcher = model.batcher
    limit = max(2, model.spec.batching.max_batch_size * model.spec.batching.instances)

    def submit(sentence: str, admitted: bool) -> asyncio.Future:
        # a request's first sentence overtakes later sentences of running requests: time to first audio
        return asyncio.ensure_future(batcher.submit(SynthJob(sentence, voice, language, speed),
                                                    wait_for_space=admitted, priority=1 if admitted else 0))

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
