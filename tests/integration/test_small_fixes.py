"""The smaller findings of the hostile test (issue 10, item 8), and services that validate as strictly as the router
(item 7): real services (espeak-ng, Silero VAD, Resemblyzer, WORLD) and the router on loopback ports.

Each test names what it was before the fix.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import time

import httpx
import numpy as np
import pytest
from sqlalchemy import insert

from services.core.contracts.specs import parse_config
from services.core.contracts.wire import has_words
from services.router.app import build_table, create_router_app
from services.store.db import open_database
from services.store.schema import voices
from services.tts.app import create_tts_app
from services.vad.app import create_vad_app
from services.vc.app import create_vc_app
from services.vc.voices import reference_key
from tests.servers import ServerThread, wait_ready
from tests.speech import wav_bytes

RATE = 16000
SENTENCE = "Hello there, this is a test of a voice that speaks for a little while."


def stack_config(tmp) -> dict:
    return {"data_dir": str(tmp / "data"), "models": [
        {"name": "espeak-ng", "task": "tts", "backend": "espeak", "source": {"package": "espeakng-loader"},
         "aliases": ["tts-1"], "options": {"seed": 0}},
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}},
        {"name": "resemblyzer", "task": "embed", "backend": "resemblyzer", "source": {"package": "resemblyzer"}},
        {"name": "world-vc", "task": "vc", "backend": "world", "source": {"package": "pyworld-prebuilt"},
         "options": {"voice_store": str(tmp / "old-voices")}},
    ], "routes": [
        {"name": "voice-clone", "task": "tts", "steps": [
            {"name": "vad", "task": "vad", "model": "silero-vad"},
            {"name": "embed", "task": "embed", "model": "resemblyzer"},
            {"name": "tts", "task": "tts", "model": "espeak-ng"}, {"name": "vc", "task": "vc", "model": "world-vc"}]},
        {"name": "speaker-embedding", "task": "embed", "steps": [
            {"name": "vad", "task": "vad", "model": "silero-vad"},
            {"name": "embed", "task": "embed", "model": "resemblyzer"}]},
        {"name": "voice-conversion", "task": "vc", "steps": [
            {"name": "vad", "task": "vad", "model": "silero-vad"}, {"name": "vc", "task": "vc", "model": "world-vc"}]},
    ]}


class Stack:
    def __init__(self, config, router, tts, vad, vc) -> None:
        self.config, self.router, self.tts, self.vad, self.vc = config, router.url, tts.url, vad.url, vc.url


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    config = parse_config(stack_config(tmp_path_factory.mktemp("small")))
    spec = {m.name: m for m in config.models}
    with ServerThread(create_tts_app([spec["espeak-ng"]])) as tts, \
            ServerThread(create_vad_app([spec["silero-vad"]])) as vad, \
            ServerThread(create_vc_app([spec["resemblyzer"], spec["world-vc"]], config=config)) as vc:
        endpoints = {"espeak-ng": [tts.url], "silero-vad": [vad.url], "resemblyzer": [vc.url], "world-vc": [vc.url]}
        with ServerThread(create_router_app(config, build_table(config, endpoints))) as router:
            for server in (tts, vad, vc, router):
                wait_ready(server.url)
            yield Stack(config, router, tts, vad, vc)


def wav(audio: np.ndarray, rate: int = RATE) -> bytes:
    return wav_bytes(audio, rate)


SILENCE = wav(np.zeros(3 * RATE))


def spoken(stack: Stack, text: str = SENTENCE) -> bytes:
    response = httpx.post(stack.router + "/v1/audio/speech", timeout=60,
                          json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"})
    assert response.status_code == 200, response.text
    return response.content


def error_of(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


# ------------------------------------------------------------------ a. no speech: a 400 about the file


def test_embedding_of_audio_without_speech_is_a_400_about_the_file(stack):
    """Was: a 400 naming 'segments', a field the client never sent."""
    error = error_of(httpx.post(stack.router + "/v1/audio/embeddings", files={"file": ("a.wav", SILENCE)}, timeout=60))
    assert error["param"] == "file" and error["code"] == "bad_reference"
    assert "no speech found in the audio ('file')" in error["message"]


def test_conversion_reference_without_speech_names_the_reference(stack):
    response = httpx.post(stack.router + "/v1/audio/conversions", timeout=60,
                          files={"file": ("s.wav", spoken(stack)), "reference": ("r.wav", SILENCE)})
    error = error_of(response)
    assert error["param"] == "reference" and "no speech found in the audio ('reference')" in error["message"]


def test_voice_service_takes_an_empty_segment_list_as_no_speech(stack):
    """``segments=[]`` for one file: that file has no speech (was: 'segments must hold one list per file')."""
    response = httpx.post(stack.vc + "/v1/audio/embeddings", data={"segments": "[]"},
                          files={"file": ("a.wav", spoken(stack))}, timeout=60)
    error = error_of(response)
    assert error["param"] == "file" and error["message"].startswith("no speech found in the audio")


@pytest.mark.parametrize("segments", ['[{"start": 0, "end": Infinity}]', '[{"start": NaN, "end": 1}]'])
def test_voice_service_refuses_segments_that_are_not_finite(stack, segments):
    """Was: an infinite end reached ``int(inf * rate)``: 500."""
    response = httpx.post(stack.vc + "/v1/audio/embeddings", data={"segments": segments},
                          files={"file": ("a.wav", SILENCE)}, timeout=60)
    assert error_of(response)["param"] == "segments"


# ------------------------------------------------------------------ b. a single-valued field sent twice


def _twice(field: str, value: tuple | str, then: list | None = None) -> list:
    part = value if isinstance(value, tuple) else (None, value)
    return [(field, part), (field, part), *(then or [])]


@pytest.mark.parametrize("where,path,files", [
    ("router", "/v1/audio/embeddings", _twice("file", ("a.wav", SILENCE))),
    ("router", "/v1/audio/vad", _twice("file", ("a.wav", SILENCE))),
    ("router", "/v1/audio/conversions", _twice("file", ("a.wav", SILENCE), [("voice", (None, "voice_0"))])),
    ("vad", "/v1/audio/vad", _twice("file", ("a.wav", SILENCE))),
    ("vc", "/v1/audio/conversions", _twice("file", ("a.wav", SILENCE), [("reference", ("r.wav", SILENCE))])),
])
def test_two_files_are_refused(stack, where, path, files):
    """Was: the last of two ``file`` parts was used, silently."""
    error = error_of(httpx.post(getattr(stack, where) + path, files=files, timeout=60))
    assert error["param"] == "file" and error["code"] == "duplicate_parameter"
    assert error["message"] == "'file' was sent 2 times; send it once"


@pytest.mark.parametrize("where,path,field,value", [
    ("router", "/v1/audio/embeddings", "model", "speaker-embedding"),
    ("router", "/v1/audio/vad", "threshold", "0.5"),
    ("router", "/v1/audio/voices", "name", "twice"),
    ("vad", "/v1/audio/vad", "model", "silero-vad"),
    ("vc", "/v1/audio/embeddings", "min_speech_seconds", "1"),
])
def test_a_single_valued_field_sent_twice_is_refused(stack, where, path, field, value):
    files = _twice(field, value, [("file", ("a.wav", SILENCE))])
    error = error_of(httpx.post(getattr(stack, where) + path, files=files, timeout=60))
    assert error["param"] == field and error["code"] == "duplicate_parameter"
    assert error["message"] == f"'{field}' was sent 2 times; send it once"


# ------------------------------------------------------------------ c. nothing to speak


@pytest.mark.parametrize("text", ["...!!!???", "¿¡…?!", " - -- ( ) ", "。、「」"])
@pytest.mark.parametrize("stream_format", ["audio", "sse"])
def test_punctuation_alone_is_a_400_at_the_router(stack, text, stream_format):
    """Was: 200 with an empty mp3."""
    response = httpx.post(stack.router + "/v1/audio/speech", timeout=60,
                          json={"model": "tts-1", "voice": "alloy", "input": text, "stream_format": stream_format})
    error = error_of(response)
    assert error["param"] == "input" and "nothing to speak" in error["message"]


def test_punctuation_alone_is_a_400_at_the_tts_service(stack):
    response = httpx.post(stack.tts + "/v1/audio/speech", timeout=60,
                          json={"model": "espeak-ng", "voice": "en-us", "input": "...!!!???"})
    error = error_of(response)
    assert error["param"] == "input" and error["message"].startswith("input: input has nothing to speak")


def test_a_punctuation_sentence_between_words_is_skipped(stack):
    """Was: '!!!' and '???' went to the synthesizer as sentences of their own (espeak-ng: 0.9 s more audio)."""
    with_blip = spoken(stack, "Hello there. !!! ??? Goodbye now.")
    ratio = len(with_blip) / len(spoken(stack, "Hello there. Goodbye now."))
    assert 0.9 < ratio < 1.1  # measured: 1.00 now, 1.66 before


@pytest.mark.parametrize("text,speaks", [("...!!!???", False), ("\u200b.\u200f", False), ("Hi", True), ("42", True),
                                         ("$", True), ("🙂", True), ("日本", True), ("。", False)])
def test_has_words(text, speaks):
    assert has_words(text) is speaks


# ------------------------------------------------------------------ d. booleans are no numbers


@pytest.mark.parametrize("field,value", [("speed", True), ("speed", False), ("speed", "1.0"), ("sample_rate", True),
                                         ("sample_rate", "24000"), ("sample_rate", 24000.5)])
def test_json_numbers_must_be_numbers_at_the_router(stack, field, value):
    """Was: ``"speed": true`` spoke at speed 1.0."""
    response = httpx.post(stack.router + "/v1/audio/speech", timeout=60,
                          json={"model": "tts-1", "voice": "alloy", "input": "Hi.", field: value})
    error = error_of(response)
    assert error["param"] == field and error["code"] == "invalid_value"
    assert error["message"].startswith(f"{field}: Input should be a valid")


@pytest.mark.parametrize("body", [{"speed": 1}, {"speed": 1.5}, {"sample_rate": 16000}])
def test_plain_numbers_still_pass(stack, body):
    response = httpx.post(stack.router + "/v1/audio/speech", timeout=60,
                          json={"model": "tts-1", "voice": "alloy", "input": "Hi.", **body})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("raw", ['"speed": true', '"speed": NaN', '"speed": Infinity', '"sample_rate": true'])
def test_json_numbers_must_be_numbers_at_the_tts_service(stack, raw):
    body = '{"model": "espeak-ng", "voice": "en-us", "input": "Hi.", ' + raw + "}"
    response = httpx.post(stack.tts + "/v1/audio/speech", content=body,
                          headers={"content-type": "application/json"}, timeout=60)
    assert error_of(response)["param"] == raw.split('"')[1]


# ------------------------------------------------------------------ e. OPTIONS and 405 list every method


@pytest.mark.parametrize("where,path,allow", [
    ("router", "/v1/audio/voices", "GET, OPTIONS, POST"),
    ("router", "/v1/audio/voices/voice_0123456789abcdef", "DELETE, GET, OPTIONS"),
    ("router", "/v1/audio/speech", "OPTIONS, POST"),
    ("router", "/v1/models/whatever", "GET, OPTIONS"),
    ("vc", "/v1/voices", "GET, OPTIONS, POST"),
    ("vc", "/v1/voices/voice_0123456789abcdef", "DELETE, GET, OPTIONS"),
    ("tts", "/v1/audio/voices", "GET, OPTIONS"),
])
def test_options_and_405_list_every_method_of_the_path(stack, where, path, allow):
    """Was: ``OPTIONS /v1/audio/voices`` -> 405 with ``Allow: GET`` (POST is declared in another module)."""
    options = httpx.options(getattr(stack, where) + path)
    assert options.status_code == 204 and options.headers["allow"] == allow
    wrong = httpx.put(getattr(stack, where) + path)
    assert wrong.status_code == 405 and wrong.headers["allow"] == allow
    assert wrong.json()["error"]["type"] == "invalid_request_error"


def test_options_on_an_unknown_path_is_404(stack):
    assert httpx.options(stack.router + "/no/such/path").status_code == 404


# ------------------------------------------------------------------ f. a quiet /readyz


def test_readyz_writes_at_most_one_line_at_info(stack, caplog):
    """Was: 8 lines per /readyz (httpx's 'HTTP Request:' line for each of the router's calls to a service)."""
    caplog.set_level(logging.INFO)
    caplog.clear()
    assert httpx.get(stack.router + "/readyz", timeout=30).status_code == 200
    time.sleep(0.5)  # the servers log on their own threads
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) <= 1, [r.getMessage() for r in lines]


# ------------------------------------------------------------------ g. bounded metric labels


def label_sets(url: str) -> set[str]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {line.split(" ")[0] for line in text.splitlines() if line.startswith("harmony_") and "{" in line}


def hostile_round(stack: Stack) -> list[str]:
    """Requests whose paths, model names and voice ids are all new: none may become a label."""
    tokens = [secrets.token_hex(6) for _ in range(12)]
    for token in tokens:
        httpx.get(stack.router + f"/v1/models/m{token}")
        httpx.get(stack.router + f"/x{token}/y")
        httpx.get(stack.router + f"/v1/audio/voices/voice_{token}0000")
        httpx.post(stack.router + "/v1/audio/speech", json={"model": f"m{token}", "voice": "alloy", "input": "Hi"})
        httpx.post(stack.router + "/v1/audio/speech", json={"model": "tts-1", "voice": f"v{token}", "input": "Hi"})
        httpx.post(stack.router + "/v1/audio/embeddings", data={"model": f"m{token}"}, files={"file": ("a", SILENCE)})
        httpx.post(stack.tts + "/v1/audio/speech", json={"model": f"m{token}", "voice": "en-us", "input": "Hi"})
        httpx.get(stack.vc + f"/v1/voices/voice_{token}0000")
        httpx.post(stack.vad + "/v1/audio/vad", data={"model": f"m{token}"}, files={"file": ("a", SILENCE)})
        httpx.request("PATCH", stack.vc + f"/v1/voices/v{token}")
    return tokens


def test_metric_labels_do_not_grow_with_paths_models_or_voices(stack):
    urls = (stack.router, stack.tts, stack.vad, stack.vc)
    for url in urls:
        label_sets(url)  # /metrics itself is counted from its first call on
    hostile_round(stack)
    after_one = {url: label_sets(url) for url in urls}
    tokens = hostile_round(stack)
    after_two = {url: label_sets(url) for url in urls}
    for url in urls:
        assert after_two[url] == after_one[url], (after_two[url] - after_one[url], after_one[url] - after_two[url])
    for url in urls:
        text = httpx.get(url + "/metrics").text
        assert not any(token in text for token in tokens)
        routes = set(re.findall(r'route="([^"]*)"', text))
        assert all(r == "unmatched" or r.startswith("/") and not re.search(r"[0-9a-f]{12}", r) for r in routes)
        models = set(re.findall(r'model="([^"]*)"', text))
        assert models <= {m.name for m in stack.config.models}, models


# ------------------------------------------------------------------ h. the voice service validates like the router


def register(stack: Stack, embedding: str, name: str = "direct") -> httpx.Response:
    return httpx.post(stack.vc + "/v1/voices", timeout=60, files={"reference": ("r.wav", spoken(stack))},
                      data={"model": "world-vc", "name": name, "embedding": embedding,
                            "embedding_model": "resemblyzer"})


@pytest.mark.parametrize("embedding,message", [
    ("[" + ", ".join(["NaN"] * 256) + "]", "'embedding' must be a JSON list of finite numbers"),
    ("[" + ", ".join(["0.1"] * 255 + ["Infinity"]) + "]", "'embedding' must be a JSON list of finite numbers"),
    ("[" + ", ".join(["true"] * 256) + "]", "'embedding' must be a JSON list of finite numbers"),
    ('["0.1"]', "'embedding' must be a JSON list of finite numbers"),
    ("[]", "'embedding' must hold 1 to 8192 numbers, not 0"),
    ("[0.1, 0.2]", "'embedding' has 2 values; 'resemblyzer' makes embeddings of 256"),
])
def test_voice_service_refuses_a_bad_embedding(stack, embedding, message):
    """Was: a NaN embedding was stored; the voice then vanished from listings and GET and speech with it were 500s."""
    error = error_of(register(stack, embedding))
    assert error["param"] == "embedding" and error["message"] == message


def test_a_corrupt_voice_row_is_skipped_not_a_500(stack):
    """A row written before these checks (NaN in its embedding): listed nowhere, 404 with a reason, deletable;
    the other voices stay listed and usable."""
    good = register(stack, json.dumps([1 / 16] * 256), name="good")
    assert good.status_code == 200, good.text
    bad_id = "voice_" + secrets.token_hex(8)
    row = {**good.json(), "id": bad_id, "name": "corrupt", "embedding": [math.nan] * 256}
    row.pop("object")
    with open_database(stack.config).engine.begin() as conn:
        conn.execute(insert(voices).values(**row, stats={}, owner_key_id=None, reference_key=reference_key(bad_id)))
    listed = httpx.get(stack.vc + "/v1/voices")
    assert listed.status_code == 200 and good.json()["id"] in [v["id"] for v in listed.json()["data"]]
    assert bad_id not in listed.text
    public = httpx.get(stack.router + "/v1/audio/voices").json()["data"]
    assert good.json()["id"] in [v["id"] for v in public] and bad_id not in [v["id"] for v in public]
    for response in (httpx.get(stack.vc + f"/v1/voices/{bad_id}"),
                     httpx.get(stack.router + f"/v1/audio/voices/{bad_id}"),
                     httpx.post(stack.router + "/v1/audio/speech", timeout=60,
                                json={"model": "voice-clone", "voice": bad_id, "input": "Hello there."})):
        error = error_of(response, 404)
        assert error["code"] == "voice_corrupt" and "delete it and register it again" in error["message"]
    assert httpx.delete(stack.router + f"/v1/audio/voices/{bad_id}").status_code == 200
    speech = httpx.post(stack.router + "/v1/audio/speech", timeout=120,
                        json={"model": "voice-clone", "voice": good.json()["id"], "input": "Hello there."})
    assert speech.status_code == 200, speech.text


@pytest.mark.parametrize("field,value", [("rpm", True), ("rpm", 2.5), ("rpm", "5"), ("audio_seconds_per_day", True),
                                         ("audio_seconds_per_day", math.inf), ("audio_seconds_per_month", math.nan)])
def test_admin_key_limits_must_be_finite_json_numbers(field, value):
    """The admin API's numbers too: ``"rpm": true`` was a limit of 1 request a minute; an infinite quota was stored."""
    from pydantic import ValidationError

    from services.router.api.protocol.admin import KeyRequest

    with pytest.raises(ValidationError):
        KeyRequest.model_validate({"name": "k", field: value})
    assert KeyRequest.model_validate({"name": "k", "rpm": 5, "audio_seconds_per_day": 60}).rpm == 5
