"""The Wyoming adapter's client of the router's own OpenAI-compatible API.

Everything a Wyoming request does goes through the router as any client's request would: validation, routing,
voices, admission, batching and its errors. Answers are read as they stream (server-sent events of a streamed
transcription, raw PCM of speech), so text and audio go on to the Wyoming client as soon as the router has them.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from services.wyoming.errors import WyomingError

API_KEY_ENV = "HARMONY_WYOMING_API_KEY"
TIMEOUT = httpx.Timeout(300.0, connect=5.0)
EntryT = TypeVar("EntryT", bound=BaseModel)


class RouterFailure(WyomingError):
    """The router refused or failed a request: its OpenAI error's message and code (or a transport failure)."""


class ModelEntry(BaseModel):
    """One entry of ``GET /v1/models``."""

    model_config = ConfigDict(extra="ignore")
    id: str
    task: str
    languages: list[str] = []
    alias_of: str | None = None
    backend: str | None = None
    pipeline: list[dict] | None = None


class VoiceEntry(BaseModel):
    """One entry of ``GET /v1/audio/voices``."""

    model_config = ConfigDict(extra="ignore")
    id: str
    name: str | None = None
    model: str
    backend: str | None = None
    languages: list[str] = []
    sample_rate: int | None = None
    neural: bool = False


class _List(BaseModel):
    data: list[dict] = []


@dataclass
class TranscriptDelta:
    text: str


@dataclass
class TranscriptDone:
    text: str


def _failure(response: httpx.Response) -> RouterFailure:
    try:
        error = response.json()["error"]
        return RouterFailure(str(error.get("message") or response.reason_phrase), str(error.get("code") or "error"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return RouterFailure(f"the engine answered {response.status_code} {response.reason_phrase}",
                             f"http_{response.status_code}")


class RouterApi:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @classmethod
    def connect(cls, url: str, api_key: str | None = None, request_timeout_s: float | None = None) -> RouterApi:
        """A client of the router at ``http://host:port`` or ``unix:/path/router.sock``; ``request_timeout_s``: the
        deadline every request carries (``X-Harmony-Timeout``), so overload comes back as a refusal in time."""
        key = api_key or os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if request_timeout_s is not None:
            headers["X-Harmony-Timeout"] = f"{request_timeout_s:g}"
        if url.startswith("unix:"):
            transport = httpx.AsyncHTTPTransport(uds=url[len("unix:"):])
            return cls(httpx.AsyncClient(transport=transport, base_url="http://harmony", headers=headers,
                                         timeout=TIMEOUT))
        return cls(httpx.AsyncClient(base_url=url, headers=headers, timeout=TIMEOUT))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _get_list(self, path: str) -> list[dict]:
        try:
            response = await self.client.get(path)
        except httpx.HTTPError as exc:
            raise RouterFailure(f"the engine cannot be reached: {exc}", "unavailable") from None
        if response.status_code >= 400:
            raise _failure(response)
        return _List.model_validate_json(response.content).data

    async def models(self) -> list[ModelEntry]:
        return await self._entries("/v1/models", ModelEntry)

    async def voices(self) -> list[VoiceEntry]:
        return await self._entries("/v1/audio/voices", VoiceEntry)

    async def _entries(self, path: str, shape: type[EntryT]) -> list[EntryT]:
        """The entries of a listing that have ``shape``; others (kinds this adapter has no use for) are left out."""
        entries = []
        for raw in await self._get_list(path):
            try:
                entries.append(shape.model_validate(raw))
            except ValidationError:
                continue
        return entries

    async def transcribe(self, wav: bytes, model: str, language: str | None) -> AsyncIterator[
            TranscriptDelta | TranscriptDone]:
        """A streamed transcription: a delta per decoded segment as windows decode, then the whole text."""
        fields = {"model": model, "stream": "true", "response_format": "json"}
        if language:
            fields["language"] = language
        files = {"file": ("wyoming.wav", wav, "audio/wav")}
        try:
            async with self.client.stream("POST", "/v1/audio/transcriptions", data=fields, files=files) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _failure(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = json.loads(line[len("data:"):])
                    if event.get("type") == "transcript.text.delta":
                        yield TranscriptDelta(str(event.get("delta", "")))
                    elif event.get("type") == "transcript.text.done":
                        yield TranscriptDone(str(event.get("text", "")))
                        return
                    elif event.get("type") == "error":
                        error = event.get("error") or {}
                        raise RouterFailure(str(error.get("message", "transcription failed")),
                                            str(error.get("code") or "error"))
        except httpx.HTTPError as exc:
            raise RouterFailure(f"the transcription failed: {exc}", "upstream_error") from None
        except ValueError:
            raise RouterFailure("the engine sent an event that is not JSON", "upstream_error") from None
        raise RouterFailure("the transcription ended without a result", "upstream_error")

    async def speak(self, text: str, voice: VoiceEntry, language: str | None,
                    sample_rate: int) -> AsyncIterator[bytes]:
        """Speech as 16-bit mono PCM at ``sample_rate``, as the router streams it (sentence by sentence)."""
        body = {"model": voice.model, "voice": voice.id, "input": text, "response_format": "pcm",
                "sample_rate": sample_rate}
        if language:
            body["language"] = language
        try:
            async with self.client.stream("POST", "/v1/audio/speech", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _failure(response)
                async for data in response.aiter_bytes():
                    yield data
        except httpx.HTTPError as exc:
            raise RouterFailure(f"the synthesis failed: {exc}", "upstream_error") from None
