"""Run the parts of one request concurrently, a few at a time, and hand their results back in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

Part = TypeVar("Part")
Result = TypeVar("Result")


async def in_order(parts: Sequence[Part], run: Callable[[Part], Awaitable[Result]], limit: int
                   ) -> AsyncIterator[Result]:
    """``run`` over ``parts`` with at most ``limit`` in flight (so the parts of many requests share batches),
    yielding each result as soon as it and every part before it are done. Closing the iterator early cancels
    the parts in flight."""
    in_flight: list[asyncio.Future[Result]] = []
    next_index = 0
    try:
        while next_index < len(parts) or in_flight:
            while next_index < len(parts) and len(in_flight) < limit:
                in_flight.append(asyncio.ensure_future(run(parts[next_index])))
                next_index += 1
            yield await in_flight.pop(0)
    finally:
        for task in in_flight:
            task.cancel()
