"""A client that leaves while its JSON body is still being read gets a 499 (for metrics and the audit line), never
a 500 with a traceback."""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request

from services.core.http.errors import install_error_handlers


def test_a_body_cut_short_by_a_disconnect_is_a_499_not_a_crash(caplog):
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/audio/speech")
    async def speech(request: Request) -> dict:
        return await request.json()

    messages = [{"type": "http.request", "body": b'{"model": "tts-1", "inp', "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/audio/speech", "raw_path": b"/v1/audio/speech", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 5), "server": ("t", 80)}
    with caplog.at_level(logging.ERROR):
        asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 499
    assert b"client_disconnected" in sent[1]["body"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
