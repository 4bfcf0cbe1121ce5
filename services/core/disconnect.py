"""Run a coroutine on behalf of an HTTP request, cancelling it when the client goes away."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from services.core.errors import HarmonyError
from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnected(HarmonyError):
    """The caller went away; its work was cancelled. Rendered like any error (nobody reads it), not logged as a crash."""

    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_disconnected"


async def until_disconnected(request: Request, work: Awaitable[T], poll_s: float = 0.1) -> T:
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientDisconnected("the client closed the connection")
    finally:
        if not task.done():
            task.cancel()
