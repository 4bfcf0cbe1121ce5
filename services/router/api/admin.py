"""The admin API (admin keys only; mounted when auth is on): /admin/keys and /admin/usage."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from services.auth.expiry import parse_expires
from services.auth.gate import Gate
from services.auth.limits import usage_summary
from services.core.contracts.errors import InvalidRequest, NotFound
from services.core.contracts.wire import JsonFloat, JsonInt


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(..., min_length=1, max_length=128)
    owner: str = Field("", max_length=128)
    models: list[str] = Field(default_factory=list)
    routes: list[str] = Field(default_factory=list)
    rpm: JsonInt | None = Field(None, ge=0)
    audio_seconds_per_day: JsonFloat | None = Field(None, ge=0)
    audio_seconds_per_month: JsonFloat | None = Field(None, ge=0)
    expires: str | None = Field(None, description="a date, a time or a duration such as 30d")
    admin: bool = False


def routes(gate: Gate) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["admin"])
    keys, limits = gate.keys, gate.limits
    assert keys is not None and limits is not None

    @api.get("/keys")
    async def list_keys() -> dict:
        found = await asyncio.to_thread(keys.list)
        return {"object": "list", "data": [k.public(gate.clock()) for k in found]}

    @api.post("/keys", status_code=201)
    async def create_key(body: KeyRequest) -> dict:
        try:
            expires_at = parse_expires(body.expires, gate.clock())
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="expires") from None
        fields = body.model_dump(exclude={"expires"})
        key, secret = await asyncio.to_thread(lambda: keys.create(**fields, expires_at=expires_at))
        return {**key.public(gate.clock()), "key": secret}  # the only time the secret is shown

    @api.get("/keys/{key_id}")
    async def show_key(key_id: str) -> dict:
        key = await asyncio.to_thread(keys.get, key_id)
        if key is None:
            raise NotFound(f"no API key '{key_id}'", param="key_id", code="key_not_found")
        rows = await asyncio.to_thread(limits.usage, key_id)
        return {**key.public(gate.clock()), "usage": usage_summary(rows).get(key_id, {})}

    @api.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> dict:
        key = await asyncio.to_thread(keys.revoke, key_id)
        if key is None:
            raise NotFound(f"no API key '{key_id}'", param="key_id", code="key_not_found")
        return key.public(gate.clock())

    @api.get("/usage")
    async def usage(key_id: str | None = None, since: str | None = None, until: str | None = None) -> dict:
        """Daily usage per key (UTC days, YYYY-MM-DD bounds inclusive) and the totals per key."""
        rows = await asyncio.to_thread(limits.usage, key_id, since, until)
        return {"object": "list", "data": rows, "totals": usage_summary(rows)}

    return api
