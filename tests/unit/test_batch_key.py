"""A batch line's request carries its batch's API key to the auth middleware: passed with the request by the batch
runner's own in-process client, moved into the ASGI scope by AsBatchKey, and seen by nothing after it."""

from __future__ import annotations

import httpx

from services.auth.middleware import BATCH_SCOPE
from services.batches.dispatch import BATCH_KEY_HEADER, AsBatchKey


async def _scope_seen(headers: dict[str, str]) -> dict:
    seen: dict = {}

    async def app(scope, receive, send):
        seen.update(scope)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=AsBatchKey(app)), base_url="http://b") as client:
        assert (await client.get("/v1/models", headers=headers)).status_code == 204
    return seen


async def test_the_batch_key_goes_into_the_scope_and_no_further():
    seen = await _scope_seen({BATCH_KEY_HEADER: "key_123", "x-harmony-priority": "batch"})
    assert seen[BATCH_SCOPE] == {"key_id": "key_123"}
    names = [name for name, _ in seen["headers"]]
    assert BATCH_KEY_HEADER.encode() not in names and b"x-harmony-priority" in names


async def test_a_batch_without_a_key_is_still_a_batch_request():
    seen = await _scope_seen({})
    assert seen[BATCH_SCOPE] == {"key_id": None}
