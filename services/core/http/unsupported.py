"""Nothing accepted and ignored: a request field the engine does not honour is refused with a 400 naming it, unless
the server's ``ignore_unsupported`` setting relaxes that to a logged warning and an ``X-Harmony-Ignored`` header.

``refuse_unsupported`` is what a parser or a route calls for such a field; ``IgnoredFields`` (a pure ASGI
middleware, installed by the router with the setting) gives each request its own list of fields let through and
writes the header when the list is not empty. Without the middleware (the model services, unit tests) every such
field is refused.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.core.contracts.errors import InvalidRequest
from services.core.runtime.request_state import RequestField

HEADER = "X-Harmony-Ignored"
log = logging.getLogger("harmony.requests")

IGNORED: RequestField[list[str]] = RequestField(
    "ignored_fields", "the fields let through under server.ignore_unsupported, for the answer's "
    "X-Harmony-Ignored header; bound by IgnoredFields (services/core/http/unsupported.py)")


def refuse_unsupported(param: str, message: str, code: str = "unsupported_parameter") -> None:
    """A 400 naming ``param`` (``code``: ``unsupported_parameter`` for a field the engine knows but does not
    honour here, ``unknown_parameter`` for one OpenAI does not define); under ``ignore_unsupported`` a warning,
    and ``param`` goes into the answer's ``X-Harmony-Ignored`` header."""
    ignored = IGNORED.get()
    if ignored is None:
        raise InvalidRequest(message, param=param, code=code)
    log.warning("ignored (server.ignore_unsupported): %s", message)
    if param not in ignored:
        ignored.append(param)


class IgnoredFields:
    """With ``enabled``, unsupported fields of a request are let through (``refuse_unsupported``) and listed in
    its answer's ``X-Harmony-Ignored`` header; without, this middleware does nothing."""

    def __init__(self, app: ASGIApp, enabled: bool = False) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.enabled or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ignored: list[str] = []
        token = IGNORED.set(ignored)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start" and ignored:
                headers = list(message.get("headers", []))
                headers.append((HEADER.lower().encode(), ",".join(ignored).encode("latin-1", "replace")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_header)
        finally:
            IGNORED.reset(token)


__all__ = ["HEADER", "IgnoredFields", "refuse_unsupported"]
