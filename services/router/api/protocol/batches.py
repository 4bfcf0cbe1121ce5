"""OpenAI's Batch API: the create request and the batch objects (``services.batches.wire``: OpenAI's types)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from services.batches.wire import BatchCreate, BatchEvent, BatchList, BatchObject


class BatchCancel(BaseModel):
    """POST /v1/batches/{id}/cancel: no body (OpenAI's takes none); one sent is not read."""

    model_config = ConfigDict(extra="allow")


__all__ = ["BatchCancel", "BatchCreate", "BatchEvent", "BatchList", "BatchObject"]
