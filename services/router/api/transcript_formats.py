"""Render a transcription result in OpenAI's response formats: json (``Transcription``), verbose_json
(``TranscriptionVerbose``), text, srt, vtt; the JSON ones built as the ``openai`` package's types."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from services.core.contracts.wire import Segment, TranscriptionResult
from services.router.api.protocol.transcription import Transcription, TranscriptionVerbose

LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "cy": "welsh", "sk": "slovak", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "sl": "slovenian", "et": "estonian", "mk": "macedonian", "is": "icelandic", "af": "afrikaans",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "eu": "basque", "ka": "georgian", "hy": "armenian",
}


def _timestamp(seconds: float, separator: str) -> str:
    millis = int(round(max(0.0, seconds) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: a segment's time and text, and who said it (the diarize model's segments)."""

    start: float
    end: float
    text: str
    speaker: str | None = None


def _one_line(text: str) -> str:
    """A cue's text on one line: a line break (or a blank line, which ends a cue) inside it becomes a space."""
    return " ".join(text.split())


def _vtt_escaped(text: str) -> str:
    """WebVTT cue text: ``&``, ``<`` and ``>`` as character references (``-->`` and tags cannot appear)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def srt_of(cues: Iterable[Cue]) -> str:
    """SubRip: numbered cues; a speaker's name before the text (``A: text``)."""
    blocks = []
    for index, cue in enumerate(cues, 1):
        text = _one_line(cue.text)
        if cue.speaker is not None:
            text = f"{_one_line(cue.speaker)}: {text}"
        blocks.append(f"{index}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n{text}\n")
    return "\n".join(blocks)


def vtt_of(cues: Iterable[Cue]) -> str:
    """WebVTT; a speaker as the cue's voice span (``<v A>text</v>``), names and text escaped."""
    lines = ["WEBVTT", ""]
    for cue in cues:
        text = _vtt_escaped(_one_line(cue.text))
        if cue.speaker is not None:
            text = f"<v {_vtt_escaped(_one_line(cue.speaker))}>{text}</v>"
        lines += [f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}", text, ""]
    return "\n".join(lines)


def subtitles(cues: Iterable[Cue], response_format: str, headers: dict[str, str] | None = None) -> Response:
    """``srt`` or ``vtt`` of ``cues`` as the answer."""
    if response_format == "srt":
        return PlainTextResponse(srt_of(cues), headers=headers)
    return PlainTextResponse(vtt_of(cues), media_type="text/vtt", headers=headers)


AUDIO_TOKENS_PER_SECOND = 50  # Whisper's encoder: one position per 20 ms of audio (1500 per 30-second window)


def token_usage(result: TranscriptionResult) -> dict[str, Any]:
    """Usage of a transcription in json, streamed or not, as OpenAI's gpt-4o-transcribe reports it (``type:
    tokens``, the only usage the SDK's ``transcript.text.done`` types): input tokens are the audio's encoder
    positions, output tokens the text tokens Whisper decoded. verbose_json keeps whisper-1's duration usage (the
    only one its type takes)."""
    audio_tokens = math.ceil(result.duration * AUDIO_TOKENS_PER_SECOND)
    output_tokens = sum(len(s.tokens) for s in result.segments)
    return {"type": "tokens", "input_tokens": audio_tokens, "output_tokens": output_tokens,
            "total_tokens": audio_tokens + output_tokens, "input_token_details": {"audio_tokens": audio_tokens}}


def logprobs_of(segments: Sequence[Segment]) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs`` of ``segments``' text tokens, in order: ``{token, logprob, bytes}`` each."""
    return [item.model_dump() for segment in segments for item in (segment.logprobs or [])]


def duration_usage(result: TranscriptionResult) -> dict[str, Any]:
    """Usage of a whole transcription, as OpenAI's whisper-1 answers it: whole seconds, rounded up."""
    return {"type": "duration", "seconds": math.ceil(result.duration)}


def to_verbose(result: TranscriptionResult, words: bool, segments: bool) -> TranscriptionVerbose:
    # a translation's text is English, and so is the language OpenAI reports for it
    language = "english" if result.task == "translate" else LANGUAGE_NAMES.get(result.language, result.language)
    body: dict[str, Any] = {
        "task": result.task, "language": language,
        "duration": result.duration, "text": result.text,
    }
    if segments:
        body["segments"] = [s.model_dump(exclude={"words", "logprobs"}) for s in result.segments]
    if words:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in (result.words or [])]
    body["usage"] = duration_usage(result)
    return TranscriptionVerbose.model_validate(body)


def to_json(result: TranscriptionResult, logprobs: bool = False) -> Transcription:
    """The json answer; its usage as the streamed answer's (``token_usage``: the one shape both can carry)."""
    return Transcription.model_validate({"text": result.text, "usage": token_usage(result),
                                         **({"logprobs": logprobs_of(result.segments)} if logprobs else {})})


def json_response(body: BaseModel) -> JSONResponse:
    """A typed answer as JSON: the fields it was given (OpenAI's optional fields it never had left out)."""
    return JSONResponse(body.model_dump(mode="json", exclude_unset=True))


def render(result: TranscriptionResult, response_format: str, granularities: Sequence[str], logprobs: bool = False
           ) -> Response:
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format in ("srt", "vtt"):
        return subtitles((Cue(s.start, s.end, s.text) for s in result.segments), response_format)
    if response_format == "verbose_json":
        return json_response(to_verbose(result, "word" in granularities,
                                        "segment" in granularities or not granularities))
    return json_response(to_json(result, logprobs))
