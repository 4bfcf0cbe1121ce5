"""Every app's error answers in OpenAI's shape: the typed errors of ``core.contracts.errors``, FastAPI's validation
errors (400 naming the field), Starlette's HTTP errors, a client gone mid-body (499) and anything unexpected (500).

``invalid_request`` (``core.contracts.errors``) is the one translation of a pydantic validation failure into
OpenAI's 400: a body parsed by hand (``json_body``, ``form_body``, the services' ``FormFields``) and a body FastAPI
parsed all answer through it."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from services.core.contracts.errors import HarmonyError, error_body, error_headers, invalid_request, openai_type

log = logging.getLogger("harmony.errors")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HarmonyError)
    async def _harmony(_: Request, exc: HarmonyError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status_code, headers=exc.response_headers())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        error = invalid_request(exc.errors())
        return JSONResponse(error.to_body(), status_code=400, headers=error.response_headers())

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(exc.detail), openai_type(exc.status_code)), status_code=exc.status_code,
                            headers=error_headers(exc.status_code, getattr(exc, "headers", None)))

    @app.exception_handler(ClientDisconnect)
    async def _gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client left while its body was read (a JSON body: uploads say so themselves): nobody reads the answer,
        # metrics and the audit line see a 499, and it is no crash
        return JSONResponse(error_body("the client closed the connection while its request was read",
                                       "invalid_request_error", None, "client_disconnected"), status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}", "server_error", None, "internal_error"),
                            status_code=500)
