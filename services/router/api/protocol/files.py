"""OpenAI's Files API: the multipart upload, and the file objects (``services.batches.wire``: OpenAI's types)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from services.batches.wire import FileDeleted, FileList, FileObject
from services.core.contracts.errors import InvalidRequest
from services.core.http.form_body import FormModel, UploadFile
from services.router.api.protocol.docs import FILES

MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400  # OpenAI's bounds of expires_after[seconds]


class FileUploadForm(FormModel):
    purpose: Literal["batch", "user_data"] = Field(description=f"What the file is for. {FILES}")
    file: UploadFile = Field(description=f"The file (a batch's input: JSONL, one request a line). {FILES}")
    expires_after_anchor: Literal["created_at"] | None = Field(
        None, alias="expires_after[anchor]", description=f"created_at: the expiry counts from the upload. {FILES}")
    expires_after_seconds: int | None = Field(
        None, alias="expires_after[seconds]", ge=MIN_EXPIRY_S, le=MAX_EXPIRY_S,
        description=f"Seconds until the file expires ({MIN_EXPIRY_S} to {MAX_EXPIRY_S}). {FILES}")

    @model_validator(mode="before")
    @classmethod
    def _expires_after(cls, data: Any) -> Any:
        """Both parts of ``expires_after`` or neither, each 400 naming its part as before (``a.b``)."""
        if not isinstance(data, dict):
            return data
        anchor, seconds = data.get("expires_after[anchor]"), data.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return data
        if anchor != "created_at":
            raise InvalidRequest("'expires_after[anchor]' must be 'created_at'", param="expires_after.anchor")
        if seconds is None or not seconds.isdigit() or not MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S:
            raise InvalidRequest(f"'expires_after[seconds]' must be a whole number from {MIN_EXPIRY_S} to "
                                 f"{MAX_EXPIRY_S}", param="expires_after.seconds")
        return data

    def expires_after_s(self, default_s: int) -> int:
        """The file's lifetime: ``expires_after[seconds]``, else the configured expiry."""
        return self.expires_after_seconds if self.expires_after_seconds is not None else default_s


__all__ = ["FileDeleted", "FileList", "FileObject", "FileUploadForm"]
