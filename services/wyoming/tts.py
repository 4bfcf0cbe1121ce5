"""Text to speech over Wyoming: ``synthesize``, and the streamed ``synthesize-start`` / ``-chunk`` / ``-stop``.

Speech comes from the router's ``POST /v1/audio/speech`` as raw 16-bit mono PCM at the voice's own rate (no
resampling), relayed as ``audio-chunk`` events as the router streams it, sentence by sentence. A streamed
synthesis speaks each sentence as soon as its text is complete, while the rest of the text still arrives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Eventable
from wyoming.tts import SynthesizeVoice

from services.core.contracts.wire import has_words, speakable
from services.tts.text import split_sentences
from services.wyoming.errors import WyomingError
from services.wyoming.info import spoken_voices
from services.wyoming.router_api import RouterApi, VoiceEntry
from services.wyoming.stt import base_language

WIDTH, CHANNELS = 2, 1
DEFAULT_RATE = 24000
SAMPLES_PER_CHUNK = 2048
MAX_TEXT_CHARS = 4096  # the router's limit for one speech request
Send = Callable[[Eventable], Awaitable[None]]


def _speaks(voice: VoiceEntry, language: str) -> bool:
    return any(base_language(lang) == language for lang in voice.languages)


def choose_voice(voices: list[VoiceEntry], wanted: SynthesizeVoice | None,
                 default: str | None = None) -> tuple[VoiceEntry, str | None]:
    """The voice (and language) a synthesize asks for: by name (a speaker that names a voice wins), else the
    first voice of the language (neural voices first, as the router lists them), else ``default``, else the first
    neural English voice, else the first."""
    usable = spoken_voices(voices)
    if not usable:
        raise WyomingError("no text-to-speech voice is served", "no_voice")
    by_id = {v.id: v for v in usable}
    language = base_language(wanted.language) if wanted else None
    if wanted and wanted.speaker and wanted.speaker in by_id:
        return by_id[wanted.speaker], language
    if wanted and wanted.name:
        voice = by_id.get(wanted.name)
        if voice is None:
            raise WyomingError(f"unknown voice '{wanted.name}' (describe lists the voices)", "unknown_voice")
        if language and not _speaks(voice, language):
            raise WyomingError(f"voice '{voice.id}' does not speak '{language}'", "unsupported_language")
        return voice, language
    if language:
        speaking = [v for v in usable if _speaks(v, language)]
        if not speaking:
            raise WyomingError(f"no voice speaks '{language}'", "unsupported_language")
        speaking.sort(key=lambda v: (not v.neural, v.id != language and not v.id.endswith("-" + language)))
        return speaking[0], language
    if default:
        if default not in by_id:
            raise WyomingError(f"the configured voice '{default}' is not served", "unknown_voice")
        return by_id[default], None
    english = [v for v in usable if v.neural and _speaks(v, "en")]
    return (english or usable)[0], None


async def speak(api: RouterApi, text: str, voice: VoiceEntry, language: str | None,
                on_audio: Callable[[bytes, int], Awaitable[None]]) -> None:
    """Speak ``text``; ``on_audio(pcm, rate)`` gets whole 16-bit samples as the router streams them."""
    rate = voice.sample_rate or DEFAULT_RATE
    rest = b""
    async for data in api.speak(text, voice, language, rate):
        data = rest + data
        whole = len(data) - len(data) % WIDTH
        rest = data[whole:]
        for offset in range(0, whole, SAMPLES_PER_CHUNK * WIDTH):
            await on_audio(data[offset:min(whole, offset + SAMPLES_PER_CHUNK * WIDTH)], rate)


class AudioOut:
    """One audio stream to the client: audio-start before the first chunk, audio-stop at the end."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.rate: int | None = None

    async def chunk(self, pcm: bytes, rate: int) -> None:
        if self.rate is None:
            self.rate = rate
            await self.send(AudioStart(rate=rate, width=WIDTH, channels=CHANNELS))
        await self.send(AudioChunk(rate=self.rate, width=WIDTH, channels=CHANNELS, audio=pcm))

    async def stop(self, rate_if_silent: int) -> None:
        if self.rate is None:  # nothing was spoken: still an (empty) stream, as the client waits for one
            await self.send(AudioStart(rate=rate_if_silent, width=WIDTH, channels=CHANNELS))
        await self.send(AudioStop())


async def synthesize(api: RouterApi, text: str, voice: VoiceEntry, language: str | None, send: Send) -> None:
    """A whole ``synthesize``: audio-start, audio-chunk..., audio-stop; an error before any audio is raised."""
    out = AudioOut(send)
    try:
        await speak(api, text, voice, language, out.chunk)
    except WyomingError:
        if out.rate is not None:  # the stream began: it ends, then the error says why it is short
            await out.stop(out.rate)
        raise
    await out.stop(voice.sample_rate or DEFAULT_RATE)


_COMPLETE_PROBE = "Z"


def complete_sentences(buffer: str) -> tuple[list[str], str]:
    """The sentences of ``buffer`` that are complete (more text follows them, or their end and a space do),
    and the text left to wait for (pure)."""
    if not buffer.strip():
        return [], buffer
    # the last piece may go on; after a space, a probe word shows whether the text before it ended a sentence
    probe = split_sentences(buffer + _COMPLETE_PROBE) if buffer[-1].isspace() else split_sentences(buffer)
    complete = probe[:-1]
    position = 0
    for sentence in complete:
        found = buffer.find(sentence, position)
        if found < 0:  # not a plain substring (cannot happen with split_sentences): keep everything waiting
            return [], buffer
        position = found + len(sentence)
    return complete, buffer[position:]


class StreamedSynthesis:
    """A ``synthesize-start`` ... ``synthesize-stop`` session: text chunks in, each complete sentence spoken by one
    task, in order, while more text arrives; each sentence's audio is its own audio-start ... audio-stop, as the
    protocol describes, and ``synthesize-stopped`` follows the last."""

    def __init__(self, api: RouterApi, voice: VoiceEntry, language: str | None, send: Send,
                 on_error: Callable[[WyomingError], Awaitable[None]]) -> None:
        self.api = api
        self.voice = voice
        self.language = language
        self.send = send
        self.on_error = on_error
        self.buffer = ""
        self.sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self.failed = False
        self.task = asyncio.create_task(self._speak_all(), name="wyoming synthesize stream")
        self.task.add_done_callback(_retrieve)

    def add(self, text: str) -> None:
        self.buffer += text
        if len(self.buffer) > MAX_TEXT_CHARS:  # no sentence end in sight: speak what there is
            self.sentences.put_nowait(self.buffer)
            self.buffer = ""
            return
        complete, self.buffer = complete_sentences(self.buffer)
        for sentence in complete:
            self.sentences.put_nowait(sentence)

    async def finish(self) -> None:
        """The rest of the text, spoken; returns when the last audio has been sent."""
        if self.buffer.strip():
            self.sentences.put_nowait(self.buffer)
        self.buffer = ""
        self.sentences.put_nowait(None)
        await self.task

    def cancel(self) -> None:
        self.task.cancel()

    async def _speak_all(self) -> None:
        while (sentence := await self.sentences.get()) is not None:
            if self.failed or not has_words(speakable(sentence)):
                continue  # after a failure the rest is dropped; punctuation alone is nothing to speak
            try:
                await synthesize(self.api, sentence, self.voice, self.language, self.send)
            except WyomingError as exc:
                self.failed = True
                await self.on_error(exc)


def _retrieve(task: asyncio.Task) -> None:
    """A stream whose client left without synthesize-stop is never awaited: its failure is not an error."""
    if not task.cancelled():
        task.exception()
