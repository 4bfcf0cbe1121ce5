"""Relaying a model service's streamed answer to the client without leaking it.

The upstream answer is opened before the client's response starts, so that an error before the
first byte is a proper HTTP error with its status. From then on the client's response owns it:
``RelayResponse`` closes it exactly once when the response ends, however it ends (the body sent,
the client gone before or during the body, a failure), which returns the pooled connection and
lowers the replica's in-flight count.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import anyio
import httpx
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

log = logging.getLogger("harmony.router")

CLOSE_TIMEOUT_S = 10.0


class Upstream:
    """One streamed upstream answer, entered by hand and closed exactly once (shielded from cancellation)."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self.response: httpx.Response | None = None

    async def open(self, stream: contextlib.AbstractAsyncContextManager[httpx.Response]) -> httpx.Response:
        try:
            self.response = await self._stack.enter_async_context(stream)
        except BaseException:
            await self.aclose()
            raise
        return self.response

    async def aclose(self) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            try:
                await self._stack.aclose()
            except Exception:  # closing must never fail the response; the connection is dropped anyway
                log.warning("closing an upstream stream failed", exc_info=True)


class RelayResponse(StreamingResponse):
    """A streamed response that owns an ``Upstream`` and closes it when it ends, however it ends.

    It listens for the client's disconnect whatever the ASGI version, so a client that leaves while
    the upstream is slow frees the upstream at once rather than at the next chunk.
    """

    def __init__(self, content: Any, upstream: Upstream, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        failure: list[Exception] = []
        try:
            async with anyio.create_task_group() as group:
                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:
                        pass  # the client went away mid-body
                    except Exception as exc:  # raised after the headers: the connection is cut, body incomplete
                        failure.append(exc)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.upstream.aclose()
        if failure:
            raise failure[0]

