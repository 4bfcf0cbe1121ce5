"""Links into OpenAI's API reference, for the ``description=`` of the fields that follow it."""

from __future__ import annotations

REFERENCE = "https://platform.openai.com/docs/api-reference"
TRANSCRIPTION = f"{REFERENCE}/audio/createTranscription"
TRANSLATION = f"{REFERENCE}/audio/createTranslation"
SPEECH = f"{REFERENCE}/audio/createSpeech"
FILES = f"{REFERENCE}/files/create"
BATCHES = f"{REFERENCE}/batch/create"
MODELS = f"{REFERENCE}/models/object"
EMBEDDINGS = f"{REFERENCE}/embeddings/object"
EXTENSION = "Harmony extension (not in OpenAI's API)"

BINARY = {"schema": {"type": "string", "format": "binary"}}
EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string"}}}


def audio_content(media_types: list[str]) -> dict[str, dict]:
    """An audio response's ``content`` in OpenAPI: the same bytes in each media type."""
    return {media: BINARY for media in media_types}
