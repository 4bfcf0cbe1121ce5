"""POST /v1/audio/voices (register a voice from reference audio), GET and DELETE /v1/audio/voices/{id}: an
extension; the voice objects are the voice store's (``core.contracts.wire``) plus the route that speaks them."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.core.contracts.wire import RegisteredVoice, VoiceDeleted
from services.core.http.form_body import FormKeys, FormModel, UploadFile
from services.router.api.protocol.docs import EXTENSION

MAX_REFERENCE_FILES = 8
REFERENCE_KEYS = ("file", "files", "files[]", "reference", "audio_sample")


class VoiceRegisterForm(FormModel):
    name: str = Field(min_length=1, max_length=128, description=f"{EXTENSION}: the voice's name")
    file: Annotated[list[UploadFile], FormKeys(*REFERENCE_KEYS)] = Field(
        max_length=MAX_REFERENCE_FILES, description=f"{EXTENSION}: 1 to {MAX_REFERENCE_FILES} recordings of the "
        f"voice (also accepted as {', '.join(REFERENCE_KEYS[1:])})")


class RegisteredVoiceObject(RegisteredVoice):
    """A registered voice as the API shows it: the store's record and the route (``model``) that speaks it."""

    model: str


__all__ = ["MAX_REFERENCE_FILES", "REFERENCE_KEYS", "RegisteredVoiceObject", "VoiceDeleted", "VoiceRegisterForm"]
