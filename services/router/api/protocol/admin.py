"""The admin API (an extension, admin keys only): API keys and their usage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.core.contracts.wire import JsonFloat, JsonInt


class KeyRequest(BaseModel):
    """POST /admin/keys."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(..., min_length=1, max_length=128, description="the key's name")
    owner: str = Field("", max_length=128, description="who holds it")
    models: list[str] = Field(default_factory=list, description="models, aliases or routes it may use (none: all)")
    routes: list[str] = Field(default_factory=list, description="API routes it may call (none: all)")
    rpm: JsonInt | None = Field(None, ge=0, description="requests per minute")
    audio_seconds_per_day: JsonFloat | None = Field(None, ge=0, description="audio quota per UTC day")
    audio_seconds_per_month: JsonFloat | None = Field(None, ge=0, description="audio quota per UTC month")
    expires: str | None = Field(None, description="a date, a time or a duration such as 30d")
    admin: bool = Field(False, description="whether it may use the admin API")


class KeyObject(BaseModel):
    """An API key as the admin API shows it: never its secret (but once, as ``key``, when it is made)."""

    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    owner: str
    prefix: str
    models: list[str]
    routes: list[str]
    rpm: int | None
    audio_seconds_per_day: float | None
    audio_seconds_per_month: float | None
    admin: bool
    state: Literal["active", "expired", "revoked"]
    created_at: str | None
    expires_at: str | None
    revoked_at: str | None


class CreatedKey(KeyObject):
    key: str = Field(description="the secret: shown this once")


class UsageTotals(BaseModel):
    requests: int = 0
    errors: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    characters: int = 0
    turns: int = 0


class KeyWithUsage(KeyObject):
    usage: dict[str, int | float] = Field(description="the key's UsageTotals (empty when it has none)")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyObject]


class UsageRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    key_id: str
    day: str


class UsageList(BaseModel):
    object: Literal["list"] = "list"
    data: list[UsageRow]
    totals: dict[str, UsageTotals]
