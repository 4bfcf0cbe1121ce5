"""A session's calls to the model services, through the router's own call path (admission, replicas, retries):
a turn's audio to the STT service like any transcription, a stream's next frames to the VAD service."""

from __future__ import annotations

import base64
import re
from typing import Any

import numpy as np

from services.core.audio import encode_audio
from services.core.contracts.specs import Task
from services.core.contracts.wire import TranscriptionParams, TranscriptionResult, VadStreamRequest, VadStreamResult
from services.router.access import allow_model
from services.router.realtime.config import Transcription
from services.router.realtime.turns import RATE
from services.router.routing import ModelTable, ServedModel
from services.router.upstream.admission import call_as, in_flight
from services.router.upstream.clients import ServiceClients

PARTIAL_TIMEOUT_S = 3.0  # a partial later than this is no use: the batcher sheds it rather than compute it late
FINAL_TIMEOUT_S = 60.0


class SessionModels:
    def __init__(self, table: ModelTable, clients: ServiceClients) -> None:
        self.table = table
        self.clients = clients

    def stt(self, settings: Transcription) -> ServedModel:
        """The session's speech-to-text model, resolved, and allowed to the session's API key (403 otherwise)."""
        if settings.model:
            model = self.table.resolve(settings.model, Task.stt, param="session.audio.input.transcription.model")
        else:
            model = self.table.first_of(Task.stt)
        allow_model(self.table, settings.model, model)
        return model

    def has_room(self, model: ServedModel) -> bool:
        """Whether ``model`` has an instance free (fewer calls at its replicas than instances to run them): partial
        decodes only fill idle capacity, so a busy model spends itself on the turns that ended."""
        return in_flight(model) < model.spec.batching.instances * max(1, len(model.replicas))

    def vad(self) -> ServedModel | None:
        return next((m for m in self.table.models.values() if m.task == Task.vad), None)

    async def transcribe(self, model: ServedModel, settings: Transcription, audio: np.ndarray,
                         final: bool, logprobs: bool = False) -> TranscriptionResult:
        """A turn (or, not ``final``, the turn so far) transcribed: a final at the ``realtime`` priority, ahead of
        interactive work; a partial at the interactive priority under a short deadline."""
        call_as("realtime" if final else None, FINAL_TIMEOUT_S if final else PARTIAL_TIMEOUT_S)
        params = TranscriptionParams(model=model.name, language=settings.language, prompt=settings.prompt,
                                     fit_context=True, logprobs=logprobs)
        wav = encode_audio(audio, RATE, "wav")
        response = await self.clients.post(model, "/v1/audio/transcriptions", data=params.form(),
                                           files={"file": ("turn.wav", wav, "audio/wav")})
        return TranscriptionResult.model_validate_json(response.content)

    async def vad_frames(self, model: ServedModel, audio: np.ndarray, state: str | None) -> VadStreamResult:
        """Speech probabilities of a stream's next whole frames, from the state its previous frames left."""
        call_as("realtime")
        pcm = encode_audio(audio, RATE, "pcm")
        body = VadStreamRequest(model=model.name, audio=base64.b64encode(pcm).decode(), state=state)
        response = await self.clients.post(model, "/v1/audio/vad/stream", json=body.model_dump(exclude_none=True))
        return VadStreamResult.model_validate_json(response.content)


def token_logprobs(result: TranscriptionResult, first_word: int = 0, end_word: int | None = None
                   ) -> list[dict[str, Any]]:
    """The ``logprobs`` of ``result``'s tokens that fall in its words ``first_word`` up to ``end_word`` (words as
    ``str.split`` counts them in the transcript): those a delta of those words carries."""
    items, text = [], ""
    for segment in result.segments:
        for item in segment.logprobs or []:
            text += item.token
            word = max(0, len(text.split()) - 1)  # the word this token ends in
            if first_word <= word and (end_word is None or word < end_word):
                items.append(item.model_dump())
    return items


_WORD = re.compile(r"[\W_]+")


def _norm(word: str) -> str:
    return _WORD.sub("", word.lower())


class DeltaText:
    """Deltas from partial re-decodes of a turn: a decode's words but its last (which may be cut mid-word) go out
    as far as they extend what went out before; a decode that rewrote words already sent adds nothing (the turn's
    ``completed`` transcript is the one to keep)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def next(self, text: str) -> str | None:
        words = text.split()[:-1]
        if len(words) <= len(self.sent) or [_norm(w) for w in words[:len(self.sent)]] != [_norm(w) for w in self.sent]:
            return None
        new = words[len(self.sent):]
        self.sent = words
        return (" " if len(self.sent) > len(new) else "") + " ".join(new)

    def rest(self, final: str) -> str | None:
        """What the turn's ``final`` text adds to the deltas sent: all of it when none went out; nothing when the
        final text rewrote words already sent (``completed`` carries the text to keep)."""
        words = final.split()
        if [_norm(w) for w in words[:len(self.sent)]] != [_norm(w) for w in self.sent] or len(words) <= len(self.sent):
            return None if self.sent else (final or None)
        new = words[len(self.sent):]
        self.sent = words
        return (" " if len(self.sent) > len(new) else "") + " ".join(new)
