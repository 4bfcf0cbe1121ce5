"""GET /v1/models and /v1/models/{id}: OpenAI's model object, with what the engine adds to it."""

from __future__ import annotations

from typing import Any, Literal

from openai.types import Model
from pydantic import BaseModel, ConfigDict, Field

from services.router.api.protocol.docs import EXTENSION, MODELS


class ModelObject(Model):
    """OpenAI's model object ({MODELS}); a model's ``task``, ``backend`` and ``languages``, an alias's ``alias_of``,
    a route's ``pipeline`` are extensions."""

    model_config = ConfigDict(extra="ignore")

    object: Literal["model"] = "model"
    task: str = Field(description=f"{EXTENSION}: stt, tts, vad, embed or vc")
    backend: str | None = Field(None, description=f"{EXTENSION}: a model's backend")
    alias_of: str | None = Field(None, description=f"{EXTENSION}: an alias's model")
    languages: list[str] | None = Field(None, description=f"{EXTENSION}: a model's languages (none: any)")
    pipeline: list[dict[str, Any]] | None = Field(None, description=f"{EXTENSION}: a route's steps")


ModelObject.__doc__ = (ModelObject.__doc__ or "").format(MODELS=MODELS)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
