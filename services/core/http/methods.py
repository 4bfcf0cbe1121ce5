"""OPTIONS and 405 for a path as a whole: ``Allow`` lists every method that any of its routes accepts.

Starlette answers a method a path does not take from the first route that matches the path alone, so a
path served by two routes (``GET`` and ``POST /v1/audio/voices``, declared in different modules) listed
only the first one's methods, and ``OPTIONS`` was a 405. This middleware answers ``OPTIONS`` itself
(204 and the path's ``Allow``) unless a route takes it, and gives the app's 405s the same ``Allow``.
It asks the routes only through ``BaseRoute.matches``, one probe per method; requests a route takes
and paths no route knows (404) go through untouched.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBED = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class AllowedMethods:
    """ASGI middleware over ``routes`` (the app's list, read on every request: routes added later count)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and not self._takes(scope, "OPTIONS"):
            allowed = self.allowed(scope)
            if allowed:
                await send({"type": "http.response.start", "status": 204,
                            "headers": [(b"allow", ", ".join(allowed).encode())]})
                await send({"type": "http.response.body", "body": b""})
                return

        async def with_allow(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", ", ".join(self.allowed(scope)).encode())]}
            await send(message)

        await self.app(scope, receive, with_allow)

    def allowed(self, scope: Scope) -> list[str]:
        """Every method some route takes at this path (and OPTIONS, answered here), sorted; [] for no route."""
        methods = [m for m in PROBED if self._takes(scope, m)]
        return sorted([*methods, "OPTIONS"]) if methods else []

    def _takes(self, scope: Scope, method: str) -> bool:
        probe = {**scope, "method": method}
        return any(route.matches(probe)[0] == Match.FULL for route in self.routes)
