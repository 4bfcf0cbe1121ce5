"""POST /v1/audio/embeddings (an extension): a speaker embedding, in the shape of OpenAI's embeddings answer."""

from __future__ import annotations

from openai.types import CreateEmbeddingResponse
from pydantic import BaseModel, Field

from services.core.http.form_body import FormModel, UploadFile
from services.router.api.protocol.docs import EMBEDDINGS, EXTENSION


class EmbeddingForm(FormModel):
    file: UploadFile = Field(description=f"{EXTENSION}: a recording of the speaker")
    model: str | None = Field(None, description=f"{EXTENSION}: an embedding route or model (default: the first)")


class SpeechUsage(BaseModel):
    speech_seconds: float = Field(description="the speech the embedding was made from (VAD's)")


class SpeakerEmbeddingResponse(CreateEmbeddingResponse):
    """OpenAI's embeddings answer ({EMBEDDINGS}); its usage counts speech seconds, not tokens."""

    usage: SpeechUsage  # type: ignore[assignment]


SpeakerEmbeddingResponse.__doc__ = (SpeakerEmbeddingResponse.__doc__ or "").format(EMBEDDINGS=EMBEDDINGS)
