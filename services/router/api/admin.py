"""The admin API (admin keys only; mounted when auth is on): /admin/keys and /admin/usage."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from services.auth.expiry import parse_expires
from services.auth.gate import Gate
from services.auth.limits import usage_summary
from services.core.contracts.errors import InvalidRequest, NotFound
from services.router.api.protocol.admin import CreatedKey, KeyList, KeyObject, KeyRequest, KeyWithUsage, UsageList


def routes(gate: Gate) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["admin"])
    keys, limits = gate.keys, gate.limits
    assert keys is not None and limits is not None

    @api.get("/keys")
    async def list_keys() -> KeyList:
        found = await asyncio.to_thread(keys.list)
        return KeyList.model_validate({"object": "list", "data": [k.public(gate.clock()) for k in found]})

    @api.post("/keys", status_code=201)
    async def create_key(body: KeyRequest) -> CreatedKey:
        try:
            expires_at = parse_expires(body.expires, gate.clock())
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="expires") from None
        fields = body.model_dump(exclude={"expires"})
        key, secret = await asyncio.to_thread(lambda: keys.create(**fields, expires_at=expires_at))
        return CreatedKey.model_validate({**key.public(gate.clock()), "key": secret})  # the only time it is shown

    @api.get("/keys/{key_id}")
    async def show_key(key_id: str) -> KeyWithUsage:
        key = await asyncio.to_thread(keys.get, key_id)
        if key is None:
            raise NotFound(f"no API key '{key_id}'", param="key_id", code="key_not_found")
        rows = await asyncio.to_thread(limits.usage, key_id)
        return KeyWithUsage.model_validate({**key.public(gate.clock()), "usage": usage_summary(rows).get(key_id, {})})

    @api.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> KeyObject:
        key = await asyncio.to_thread(keys.revoke, key_id)
        if key is None:
            raise NotFound(f"no API key '{key_id}'", param="key_id", code="key_not_found")
        return KeyObject.model_validate(key.public(gate.clock()))

    @api.get("/usage")
    async def usage(key_id: str | None = None, since: str | None = None, until: str | None = None) -> UsageList:
        """Daily usage per key (UTC days, YYYY-MM-DD bounds inclusive) and the totals per key."""
        rows = await asyncio.to_thread(limits.usage, key_id, since, until)
        return UsageList.model_validate({"object": "list", "data": rows, "totals": usage_summary(rows)})

    return api
