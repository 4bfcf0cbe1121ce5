"""Diarized transcription (``model=gpt-4o-transcribe-diarize``): the engine's extension fields of the multipart
request, and OpenAI's answers (``TranscriptionDiarized``, the streamed ``transcript.text.segment`` events).

OpenAI's own fields (``known_speaker_names[]``, ``known_speaker_references[]``, ``chunking_strategy``) are in
``TranscriptionForm``; these extensions bound and name the speakers."""

from __future__ import annotations

from typing import Literal

from openai.types.audio import TranscriptionDiarized, TranscriptionDiarizedSegment, TranscriptionTextSegmentEvent
from pydantic import Field

from services.core.http.form_body import FormModel
from services.router.api.protocol.docs import EXTENSION

# what OpenAI answers for gpt-4o-transcribe-diarize, and (the engine's extension) subtitles with the speakers named
DIARIZED_FORMATS = ("json", "text", "diarized_json", "srt", "vtt")
MAX_KNOWN_SPEAKERS = 4
REFERENCE_SECONDS = (2.0, 10.0)


class DiarizationFields(FormModel):
    """The diarize model's extensions (refused for the other models)."""

    min_speakers: int | None = Field(None, ge=1, le=32, description=f"{EXTENSION}: at least this many speakers "
                                     "(the diarize model only)")
    max_speakers: int | None = Field(None, ge=1, le=32, description=f"{EXTENSION}: at most this many speakers "
                                     "(the diarize model only)")
    known_speakers: Literal["registered"] | None = Field(
        None, description=f"{EXTENSION}: 'registered' names every speaker who matches a voice the API key registered "
        "(the voice's name); the diarize model only")
    speaker_similarity_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description=f"{EXTENSION}: the cosine similarity at which a speaker is a known one "
        "(default 0.75); the diarize model only")


DIARIZATION_EXTENSIONS = tuple(DiarizationFields.model_fields)

__all__ = ["DIARIZATION_EXTENSIONS", "DIARIZED_FORMATS", "MAX_KNOWN_SPEAKERS", "REFERENCE_SECONDS",
           "DiarizationFields", "TranscriptionDiarized", "TranscriptionDiarizedSegment",
           "TranscriptionTextSegmentEvent"]
