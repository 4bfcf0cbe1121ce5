"""The wire shapes of the Files and Batch API: the ``openai`` package's own types (``FileObject``, ``Batch``), and
the engine's documented extensions as their subclasses."""

from __future__ import annotations

from typing import Any, Literal

import openai.types as openai_types
from openai.types.batch_request_counts import BatchRequestCounts
from pydantic import BaseModel, ConfigDict, Field, field_validator

BATCH_REFERENCE = "https://platform.openai.com/docs/api-reference/batch/create"

FilePurpose = Literal["batch", "user_data", "batch_output"]
UPLOAD_PURPOSES = ("batch", "user_data")
BatchStatus = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                      "cancelled"]
TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
ENDPOINTS = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech")
COMPLETION_WINDOWS = {"24h": 24 * 3600}


class FileObject(openai_types.FileObject):
    """OpenAI's file object; what it holds is the engine's (its fields only: no extras kept)."""

    model_config = ConfigDict(extra="ignore")

    object: Literal["file"] = "file"
    purpose: FilePurpose  # type: ignore[assignment]
    status: Literal["uploaded", "processed", "error"] = "processed"


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


class BatchError(openai_types.BatchError):
    model_config = ConfigDict(extra="ignore")

    code: str
    message: str


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BatchRequestCounts):
    model_config = ConfigDict(extra="ignore")

    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchCreate(BaseModel):
    """POST /v1/batches."""

    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(..., min_length=1, max_length=64,
                               description=f"A file of purpose batch: one request a line. {BATCH_REFERENCE}")
    endpoint: str = Field(..., description=f"One of {', '.join(ENDPOINTS)}. {BATCH_REFERENCE}")
    completion_window: str = Field("24h", description=f"24h. {BATCH_REFERENCE}")
    metadata: dict[str, str] | None = Field(None, description=f"Up to 16 pairs. {BATCH_REFERENCE}")

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


class BatchObject(openai_types.Batch):
    """OpenAI's batch object; ``audio_seconds_done``, ``audio_seconds_total`` and ``eta_seconds`` are extensions."""

    model_config = ConfigDict(extra="ignore")

    object: Literal["batch"] = "batch"
    errors: BatchErrors | None = None  # type: ignore[assignment]
    status: BatchStatus
    request_counts: RequestCounts = Field(default_factory=RequestCounts)  # type: ignore[assignment]
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
