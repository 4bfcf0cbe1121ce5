"""The voice directory: every TTS voice the services offer, and the choice of voice and model for a request.

Voices are learned from each TTS service's ``GET /v1/audio/voices`` and refreshed
when a request names a voice the directory does not know yet.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import Task
from services.core.contracts.wire import VoiceInfo, VoiceList
from services.router.routing import ModelTable, ServedModel
from services.router.upstream.clients import ServiceClients

# OpenAI's voice names: each means "the default voice for the requested language".
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse",
                 "marin", "cedar")
REFRESH_S = 5.0


class VoiceDirectory:
    def __init__(self, table: ModelTable, clients: ServiceClients) -> None:
        self.table = table
        self.clients = clients
        self.voices: dict[str, VoiceInfo] = {}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()

    async def refresh(self, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._loaded_at < REFRESH_S and self.voices:
                return
            voices: dict[str, VoiceInfo] = {}
            urls = {r.url for m in self.table.models.values() if m.task == Task.tts for r in m.replicas}
            for url in sorted(urls):
                try:
                    response = await self.clients.client(url).get("/v1/audio/voices", timeout=5.0)
                    response.raise_for_status()
                except httpx.HTTPError:
                    continue
                for voice in VoiceList.model_validate_json(response.content).data:
                    if voice.model in self.table.models:
                        voices.setdefault(voice.id, voice)
            self.voices = voices
            self._loaded_at = time.monotonic()

    async def listing(self) -> list[VoiceInfo]:
        await self.refresh()
        return sorted(self.voices.values(), key=lambda v: (not v.neural, v.id))

    async def choose(self, model_name: str, voice: str, language: str | None) -> tuple[ServedModel, VoiceInfo, str]:
        """(model, voice, language) for a speech request; 400 naming the valid voices otherwise. Whether the request
        may use the model is the route's check (``services.router.access``)."""
        requested = self.table.resolve(model_name, Task.tts)
        explicit_model = model_name == requested.name
        if voice not in self.voices or not self.voices:
            await self.refresh(force=voice not in OPENAI_VOICES)
        if voice in self.voices:
            info = self.voices[voice]
            if explicit_model and info.model != requested.name:
                raise InvalidRequest(f"voice '{voice}' belongs to model '{info.model}', not '{requested.name}'",
                                     param="voice", code="voice_model_mismatch")
            lang = (language or info.languages[0]).lower()
            if not _speaks(info, lang):
                raise InvalidRequest(f"voice '{voice}' speaks {', '.join(info.languages)}, not '{lang}'",
                                     param="language", code="unsupported_language")
            return self.table.models[info.model], info, lang
        if voice in OPENAI_VOICES:
            lang = (language or "en").lower()
            default = self._default_voice(requested, lang, prefer_requested=True)
            if default is None:
                raise InvalidRequest(f"no voice speaks language '{lang}'", param="language",
                                     code="unsupported_language")
            if explicit_model and default.model != requested.name:
                raise InvalidRequest(f"model '{requested.name}' does not speak '{lang}'", param="language",
                                     code="unsupported_language")
            return self.table.models[default.model], default, lang
        valid = sorted(OPENAI_VOICES) + sorted(self.voices)
        raise InvalidRequest(f"unknown voice '{voice}'. Valid voices: {', '.join(valid)}", param="voice",
                             code="unknown_voice")

    def _default_voice(self, requested: ServedModel, language: str, prefer_requested: bool) -> VoiceInfo | None:
        candidates = [v for v in self.voices.values() if _speaks(v, language)]
        if not candidates:
            return None
        candidates.sort(key=lambda v: (not (prefer_requested and v.model == requested.name), not v.neural,
                                       v.id != language and not v.id.endswith("-" + language), v.id))
        return candidates[0]

    async def default_voice(self, model_name: str, language: str) -> tuple[ServedModel, VoiceInfo, str]:
        """The voice a pipeline's tts step uses: the step's model when it speaks ``language``, else any model."""
        await self.refresh()
        requested = self.table.models.get(model_name) or self.table.resolve(model_name, Task.tts)
        info = self._default_voice(requested, language.lower(), prefer_requested=True)
        if info is None:
            raise InvalidRequest(f"no voice speaks language '{language}'", param="language",
                                 code="unsupported_language")
        return self.table.models[info.model], info, language.lower()


def _speaks(voice: VoiceInfo, language: str) -> bool:
    base = language.split("-")[0]
    return language in voice.languages or base in voice.languages

