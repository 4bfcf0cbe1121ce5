"""One batch request sent through the router's own app, in process, at batch priority; its output line back.

The request goes through every middleware and route an interactive request does (the same validation, the same
formats, the same errors), with ``X-Harmony-Priority: batch``, and as the batch's API key: the runner's own
in-process client sends it with the request (``BATCH_KEY_HEADER``), and ``AsBatchKey``, which only that client
reaches, moves it into the ASGI scope, where no client of the router's server can put anything.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from services.auth.middleware import BATCH_SCOPE
from services.batches.files import FileStore, Owner, derived_file_id
from services.batches.probe import audio_seconds, fix_streamed_wav
from services.batches.store import Item
from services.batches.wire import OutputResponse, SpeechResult
from services.core.contracts.errors import HarmonyError, InvalidRequest
from services.core.contracts.formats import CONTENT_TYPES
from services.core.runtime.timing import PRIORITY_HEADER

RETRIED = frozenset({429, 503, 504})  # the engine was busy: the request waits and goes again, it does not fail
QUOTA_SPENT = "insufficient_quota"  # a 429 that is no load: the key's quota is spent (the batch stops taking lines)
SPEECH = "/v1/audio/speech"
BATCH_KEY_HEADER = "x-harmony-batch-key-id"  # the in-process client's only: AsBatchKey takes it off the request


@dataclass
class Outcome:
    """What became of one request: an output line (``failed`` ones go to the error file), or a retry."""

    response: OutputResponse | None = None
    failed: bool = False
    retry_after_s: float | None = None
    audio_seconds: float | None = None
    file_row: dict[str, Any] | None = field(default=None)  # a speech request's audio file, added with its line
    quota_spent: bool = False  # refused for the key's spent audio quota: the batch's other lines end the same way


class AsBatchKey:
    """The router's app as the batch runner's client calls it: every request is a batch's (``BATCH_SCOPE`` in its
    scope), as the API key its ``BATCH_KEY_HEADER`` names (none: no key), and that header goes no further."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        named = BATCH_KEY_HEADER.encode()
        key_id = next((value.decode("latin-1") for name, value in scope.get("headers", ()) if name == named), None)
        headers = [(name, value) for name, value in scope.get("headers", ()) if name != named]
        await self.app({**scope, "headers": headers, BATCH_SCOPE: {"key_id": key_id or None}}, receive, send)


def backoff_s(attempts: int, retry_after: str | None) -> float:
    """The server's Retry-After when it gave one, else exponential (1 s doubling to 60 s), with jitter."""
    try:
        wanted = float(retry_after) if retry_after else None
    except ValueError:
        wanted = None
    base = wanted if wanted is not None and wanted >= 0 else min(60.0, 2.0 ** max(attempts - 1, 0))
    return min(base, 300.0) * random.uniform(1.0, 1.25)


def _form_value(name: str, value: Any) -> list[tuple[str, str]]:
    """A JSON body's field as multipart fields: a list as repeated ``name[]`` (``known_speaker_names``, whether the
    line wrote ``known_speaker_names`` or ``known_speaker_names[]``), an object as its JSON text
    (``chunking_strategy``)."""
    if isinstance(value, bool):
        return [(name, "true" if value else "false")]
    if isinstance(value, (str, int, float)):
        return [(name, str(value))]
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
        return [(name.removesuffix("[]") + "[]", str(v)) for v in value]
    if isinstance(value, dict):
        return [(name, json.dumps(value))]
    raise InvalidRequest(f"'{name}' must be a string, a number, a boolean, an object or a list of strings or "
                         "numbers", param=name)


def transcription_form(body: dict[str, Any]) -> tuple[str, dict[str, str | list[str]]]:
    """A transcription body's audio file id and its other fields as form fields (pure)."""
    file_id = body.get("file")
    if not isinstance(file_id, str) or not file_id.startswith("file-"):
        raise InvalidRequest("'file' must name an uploaded file: \"file\": \"file-...\" (upload the audio with "
                             "POST /v1/files, purpose user_data)", param="file", code="invalid_value")
    if body.get("stream") not in (None, False, "false"):
        raise InvalidRequest("'stream' is not available in a batch", param="stream")
    fields: dict[str, str | list[str]] = {}
    for name, value in body.items():
        if name != "file" and value is not None:
            for key, text in _form_value(name, value):
                previous = fields.get(key)
                fields[key] = text if previous is None else [*([previous] if isinstance(previous, str)
                                                                else previous), text]
    return file_id, fields


def _speech_name(custom_id: str, fmt: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", custom_id)[:200] or "speech") + "." + fmt


class Dispatcher:
    def __init__(self, app: ASGIApp, files: FileStore, file_expiry_s: int, timeout_s: float) -> None:
        self.files = files
        self.file_expiry_s = file_expiry_s
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=AsBatchKey(app)),
                                        base_url="http://harmony.batch", timeout=timeout_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def ready(self) -> bool:
        try:
            return (await self.client.get("/readyz", timeout=5.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def run(self, item: Item) -> Outcome:
        try:
            response = await self._send(item)
        except HarmonyError as exc:  # the request could not be made (its file is unknown, a field is no field)
            request_id = "req_" + secrets.token_hex(12)
            return Outcome(OutputResponse(status_code=exc.status_code, request_id=request_id, body=exc.to_body()),
                           failed=True)
        request_id = response.headers.get("x-request-id", "")
        if response.status_code == 429 and _code(response) == QUOTA_SPENT:
            return Outcome(OutputResponse(status_code=429, request_id=request_id, body=_body(response)), failed=True,
                           quota_spent=True)
        if response.status_code in RETRIED:
            return Outcome(retry_after_s=backoff_s(item.attempts, response.headers.get("retry-after")))
        if response.status_code >= 400:
            return Outcome(OutputResponse(status_code=response.status_code, request_id=request_id,
                                          body=_body(response)), failed=True)
        if item.endpoint == SPEECH:
            return await asyncio.to_thread(self._speech, item, response, request_id)
        return Outcome(OutputResponse(status_code=response.status_code, request_id=request_id, body=_body(response)),
                       audio_seconds=item.audio_seconds)

    async def _send(self, item: Item) -> httpx.Response:
        headers = {PRIORITY_HEADER: "batch", **({BATCH_KEY_HEADER: item.owner_key_id} if item.owner_key_id else {})}
        if item.endpoint == SPEECH:
            if item.body.get("stream_format") == "sse":
                raise InvalidRequest("'stream_format' sse is not available in a batch", param="stream_format")
            return await self.client.post(item.endpoint, json=item.body, headers=headers)
        file_id, fields = transcription_form(item.body)
        record, data = await asyncio.to_thread(self.files.content, file_id, Owner(item.owner_key_id))
        if record.purpose not in ("user_data", "batch"):
            raise InvalidRequest(f"file {file_id} has purpose '{record.purpose}', not user_data", param="file")
        files = {"file": (record.filename, data, "application/octet-stream")}
        return await self.client.post(item.endpoint, data=fields, files=files, headers=headers)

    def _speech(self, item: Item, response: httpx.Response, request_id: str) -> Outcome:
        """Store the audio as a file (purpose batch_output, an id that the same request always gets: a request run
        again after a crash replaces it); the output line carries its id."""
        fmt = str(item.body.get("response_format") or "mp3")
        data = fix_streamed_wav(response.content) if fmt == "wav" else response.content
        rate = response.headers.get("x-sample-rate", "")
        seconds = audio_seconds(data, fmt, int(rate) if rate.isdigit() else None)
        file_id = derived_file_id(item.batch_id, str(item.line), "speech")
        row = self.files.row_values(file_id, _speech_name(item.custom_id, fmt), "batch_output", len(data),
                                    item.owner_key_id, self.file_expiry_s)
        self.files.objects.put(row["object_key"], data)
        body = SpeechResult(file_id=file_id, content_type=CONTENT_TYPES.get(fmt, "application/octet-stream"),
                            bytes=len(data), audio_seconds=seconds)
        return Outcome(OutputResponse(status_code=response.status_code, request_id=request_id,
                                      body=body.model_dump()), audio_seconds=seconds, file_row=row)


def _code(response: httpx.Response) -> str | None:
    """The OpenAI error code of an error answer, if it has one."""
    body = _body(response)
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _body(response: httpx.Response) -> Any:
    """JSON answers as JSON; text formats (text, srt, vtt) as the text."""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            return response.json()
        except ValueError:
            pass
    return response.text
