"""OpenAI's Batch API: the create request and the batch objects (``services.batches.wire``: OpenAI's types)."""

from __future__ import annotations

from services.batches.wire import BatchCreate, BatchEvent, BatchList, BatchObject

__all__ = ["BatchCreate", "BatchEvent", "BatchList", "BatchObject"]
