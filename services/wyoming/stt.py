"""Speech to text over Wyoming: ``transcribe``, then ``audio-start`` / ``audio-chunk`` / ``audio-stop``.

The audio is kept as 16-bit mono PCM at the rate the audio-start names (chunks in another format are converted by
the wyoming library's converter), bounded in seconds, and sent to the router as a WAV at audio-stop. The
router's streamed transcription sends a ``transcript-chunk`` per decoded segment, then the ``transcript`` and
``transcript-stop``.
"""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator, Awaitable, Callable

from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart
from wyoming.event import Eventable

from services.wyoming.errors import WyomingError
from services.wyoming.info import PROGRAM, stt_models
from services.wyoming.router_api import ModelEntry, TranscriptDelta, TranscriptDone

MIN_RATE, MAX_RATE = 4000, 384000
MAX_KEPT_RATE = 48000
WIDTHS = (1, 2, 3, 4)
MAX_CHANNELS = 16
Send = Callable[[Eventable], Awaitable[None]]


def base_language(language: str | None) -> str | None:
    """``en-US``, ``en_US`` and ``EN`` are all ``en``: the code Whisper and the model listing use."""
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower() or None


def _speaks(model: ModelEntry, language: str) -> bool:
    return any(base_language(lang) == language for lang in model.languages)


def choose_stt_model(models: list[ModelEntry], name: str | None, language: str | None,
                     preferred: str | None = None) -> ModelEntry:
    """The model a transcribe asks for by name (or alias), else ``preferred``, else the model that declares the
    language with the fewest others (a specialist: whisper-tiny.en for English), else the one with most languages."""
    own = stt_models(models)
    if not own:
        raise WyomingError("no speech-to-text model is served", "no_model")
    by_name = {m.id: m for m in models if m.task == "stt" and m.pipeline is None}
    wanted = (name if name != PROGRAM else None) or preferred  # the program's own name means no model in particular
    lang = base_language(language)
    if wanted:
        entry = by_name.get(wanted)
        if entry is None:
            raise WyomingError(f"unknown speech-to-text model '{wanted}'; served: "
                               f"{', '.join(m.id for m in own)}", "unknown_model")
        model = next((m for m in own if m.id == (entry.alias_of or entry.id)), entry)
        if lang and model.languages and not _speaks(model, lang):
            raise WyomingError(f"model '{model.id}' does not transcribe '{lang}'", "unsupported_language")
        return model
    if lang is None:
        return max(own, key=lambda m: (not m.languages, len(m.languages)))
    speaking = [m for m in own if _speaks(m, lang)]
    if speaking:
        return min(speaking, key=lambda m: len(m.languages))
    open_models = [m for m in own if not m.languages]  # a model that declares none may still know it
    if open_models:
        return open_models[0]
    raise WyomingError(f"no speech-to-text model transcribes '{lang}'", "unsupported_language")


class AudioBuffer:
    """The audio of one transcribe: 16-bit mono PCM at the audio-start's rate (at most 48 kHz), at most
    ``max_seconds``."""

    def __init__(self, start: AudioStart, max_seconds: float) -> None:
        if not (MIN_RATE <= start.rate <= MAX_RATE) or start.width not in WIDTHS or \
                not (1 <= start.channels <= MAX_CHANNELS):
            raise WyomingError(f"unsupported audio format: rate {start.rate} Hz (4000-384000), width {start.width} "
                               f"bytes (1-4), {start.channels} channels (1-{MAX_CHANNELS})", "bad_audio_format")
        self.rate = min(start.rate, MAX_KEPT_RATE)  # a higher rate is resampled: it only costs memory
        self.max_bytes = int(max_seconds * self.rate) * 2
        self.max_seconds = max_seconds
        self.converter = AudioChunkConverter(rate=self.rate, width=2, channels=1)
        self.pcm = bytearray()
        self.too_long = False

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate

    def add(self, chunk: AudioChunk) -> None:
        """Append a chunk; past the bound the audio is refused (once) and the rest is dropped."""
        if self.too_long:
            return
        if chunk.width not in WIDTHS or not (1 <= chunk.channels <= MAX_CHANNELS) or \
                not (MIN_RATE <= chunk.rate <= MAX_RATE):
            raise WyomingError("audio-chunk has an unsupported format", "bad_audio_format")
        usable = len(chunk.audio) - len(chunk.audio) % (chunk.width * chunk.channels)
        if usable != len(chunk.audio):
            chunk = AudioChunk(chunk.rate, chunk.width, chunk.channels, chunk.audio[:usable])
        data = self.converter.convert(chunk).audio
        if len(self.pcm) + len(data) > self.max_bytes:
            self.too_long = True
            raise WyomingError(f"audio is longer than {self.max_seconds:g} s, the limit of this transcribe",
                               "audio_too_long")
        self.pcm += data

    def wav(self, nbytes: int | None = None) -> bytes:
        """The audio (its first ``nbytes``) as a WAV file."""
        out = io.BytesIO()
        with wave.open(out, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            wav.writeframes(bytes(self.pcm if nbytes is None else self.pcm[:nbytes]))
        return out.getvalue()


async def relay(events: AsyncIterator[TranscriptDelta | TranscriptDone], language: str | None, send: Send,
                stream: bool) -> None:
    """A transcription's events to the client, in the protocol's order: with ``stream``, transcript-start and a
    transcript-chunk per decoded segment, then the ``transcript`` (always), then transcript-stop."""
    lang = base_language(language)
    started = said = False
    async for event in events:
        if stream and not started:
            await send(TranscriptStart(language=lang))
            started = True
        if isinstance(event, TranscriptDelta):
            text = event.text if said else event.text.lstrip()  # the chunks add up to the transcript
            if stream and text:
                await send(TranscriptChunk(text=text))
                said = True
        elif isinstance(event, TranscriptDone):
            await send(Transcript(text=event.text.strip(), language=lang))
            if stream:
                await send(TranscriptStop())
            return
