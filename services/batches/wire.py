"""The wire shapes of the Files and Batch API, as OpenAI's (plus the documented extensions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

FilePurpose = Literal["batch", "user_data", "batch_output"]
UPLOAD_PURPOSES = ("batch", "user_data")
BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
ENDPOINTS = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech")
COMPLETION_WINDOWS = {"24h": 24 * 3600}


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchCreate(BaseModel):
    """POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(..., min_length=1, max_length=64)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if value not in ENDPOINTS:
            raise ValueError(f"endpoint '{value}' is not supported; use one of {', '.join(ENDPOINTS)}")
        return value

    @field_validator("completion_window")
    @classmethod
    def _window(cls, value: str) -> str:
        if value not in COMPLETION_WINDOWS:
            raise ValueError(f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}, not '{value}'")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())):
            raise ValueError("metadata holds at most 16 pairs, keys up to 64 characters, values up to 512")
        return value


class BatchObject(BaseModel):
    """OpenAI's batch object; ``audio_seconds_done``, ``audio_seconds_total`` and ``eta_seconds`` are extensions."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts = Field(default_factory=RequestCounts)
    metadata: dict[str, str] | None = None
    audio_seconds_done: float = 0.0
    audio_seconds_total: float | None = None
    eta_seconds: float | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class InputLine(BaseModel):
    """One request of a batch input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(..., min_length=1, max_length=512)
    method: Literal["POST"]
    url: str
    body: dict[str, Any]


class OutputResponse(BaseModel):
    status_code: int
    request_id: str
    body: Any


class OutputErrorDetail(BaseModel):
    code: str
    message: str


class OutputLine(BaseModel):
    """One line of a batch's output or error file."""

    id: str
    custom_id: str
    response: OutputResponse | None = None
    error: OutputErrorDetail | None = None


class SpeechResult(BaseModel):
    """The body of a speech request's output line (extension): the audio is a file of purpose batch_output."""

    object: Literal["audio.speech.file"] = "audio.speech.file"
    file_id: str
    content_type: str
    bytes: int
    audio_seconds: float | None = None


class BatchEvent(BaseModel):
    """A server-sent event of GET /v1/batches/{id}/events."""

    type: str  # batch.progress, or batch.<status> at the end
    batch: BatchObject
