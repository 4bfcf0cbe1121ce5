"""Synthesis of whole requests: sentences through the batcher, in order, as soon as each is ready."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import numpy as np

from services.core.contracts.errors import InvalidRequest, RequestTimeout
from services.core.contracts.wire import has_words
from services.core.http.service_app import LoadedModel
from services.core.runtime.in_order import in_order
from services.core.tasks.jobs import SynthJob
from services.tts.limits import check_work
from services.tts.text import split_sentences

LAST_RANK = 2  # sentences 0 and 1 of every request go before anyone's third (first audio for every listener)


async def synthesize_sentences(model: LoadedModel, text: str, voice: str, language: str, speed: float
                               ) -> AsyncIterator[np.ndarray]:
    """The sentences' audio in order. The work is estimated first (400 past ``limits.max_speech_seconds``);
    one deadline (``batching.timeout_s``) bounds the whole request, every sentence included (504 past it)."""
    deadline = time.monotonic() + model.spec.batching.timeout_s
    sentences = [s for s in split_sentences(text) if has_words(s)]  # "!!!" alone would be a blip, or nothing
    if not sentences:
        raise InvalidRequest("'input' has no text to speak", param="input")
    seconds = await check_work(model, sentences, voice, speed)
    limit = max(2, model.spec.batching.max_batch_size * model.spec.batching.instances)
    # the whole request is admitted at once, its sentences weighed by their estimated speech (429 if it cannot
    # finish before its deadline behind the work admitted before it); they then run ahead of later requests,
    # but for their rank: every request's first sentence starts before the second ones, and those before the rest,
    # each for as long as the (estimated) audio before it lasts
    with model.batcher.reserve(sum(seconds), deadline=deadline) as work:
        async def one(index: int) -> np.ndarray:
            try:
                # a sentence is needed once the audio before it has played: until then, first sentences go first
                return await work.submit(SynthJob(sentences[index], voice, language, speed), units=seconds[index],
                                         rank=min(index, LAST_RANK), rank_hold_s=sum(seconds[:index]))
            except RequestTimeout:
                raise RequestTimeout(
                    f"the synthesis by '{model.spec.name}' passed its deadline (the client's, or "
                    f"batching.timeout_s = {model.spec.batching.timeout_s:g} s) before its {len(sentences)} sentences "
                    "were spoken; send shorter text") from None

        async for audio in in_order(range(len(sentences)), one, limit):
            yield audio
