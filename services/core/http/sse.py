"""Server-sent events: the one encoder of a ``data: ...`` frame, for every stream the engine answers."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

MEDIA_TYPE = "text/event-stream"


def sse_frame(event: BaseModel | dict[str, Any], *, omit_none: bool = True) -> bytes:
    """One event as its frame: ``data: <JSON>`` and the blank line that ends it. A model is its JSON, its fields
    that are None left out (OpenAI's optional fields an event never had) unless ``omit_none`` is False (a batch
    object shows its empty fields); a dict is as ``json.dumps`` writes it."""
    text = event.model_dump_json(exclude_none=omit_none) if isinstance(event, BaseModel) else json.dumps(event)
    return f"data: {text}\n\n".encode()
