"""A model service whose SpeechModel names a Hugging Face repository: it answers while the weights come, /readyz
(its own and the router's) says how far, and once they are in the cache the model transcribes."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from services.stt.app import create_stt_app
from services.weights.cache import ModelCache, slug
from tests.hub_mirror import TINY
from tests.servers import ServerThread
from tests.speech import synthesize, wav_bytes, wer


@pytest.fixture
def hub_cache(hub_mirror, monkeypatch, tmp_path):
    for key, value in hub_mirror.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HARMONY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARMONY_OFFLINE", raising=False)
    return ModelCache(tmp_path / "cache")


def test_readyz_shows_the_fetch_then_the_model_serves(hub_mirror, hub_cache):
    config = parse_config({"models": [{
        "name": "hub-tiny", "task": "stt", "backend": "faster-whisper", "source": {"hf": {"repo": TINY}},
        "aliases": ["whisper-1"], "batching": {"max_batch_size": 2, "max_queue_delay_ms": 5}}]})
    commit = hub_mirror.commits[TINY][-1]
    started = threading.Event()
    app = create_stt_app(config.models, config.server.max_upload_bytes)
    # another process holds the model's lock (it is fetching it): the service waits, and says so
    with hub_cache.locked(f"model-hf-{slug(TINY)}-{commit}"):
        server = ServerThread(app)
        opener = threading.Thread(target=lambda: (server.__enter__(), started.set()), daemon=True)
        opener.start()
        body = _wait_for_weights(server.url)
        assert body["status"] == "not ready" and body["models"] == {"hub-tiny": "loading"}
        assert body["weights"]["hub-tiny"]["revision"] == commit
        assert body["weights"]["hub-tiny"]["bytesTotal"] == sum(f["size"] for name, f in hub_mirror.files[TINY].items()
                                                                 if name in ("model.bin", "config.json",
                                                                             "tokenizer.json", "vocabulary.txt"))
        table = build_table(config, {"hub-tiny": [server.url]})
        with ServerThread(create_router_app(config, table)) as router:
            routed = httpx.get(router.url + "/readyz", timeout=10)
            assert routed.status_code == 503 and routed.json()["weights"]["hub-tiny"]["revision"] == commit
            refused = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "hub-tiny"},
                                 files={"file": ("a.wav", b"RIFF")}, timeout=10)
            assert refused.status_code == 503 and "not loaded yet" in refused.json()["error"]["message"]
    assert started.wait(120)
    try:
        ready = httpx.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["weights"]["hub-tiny"]["phase"] == "ready"  # and which commit it serves
        assert ready.json()["weights"]["hub-tiny"]["revision"] == commit
        text = "The weights came from a mirror of the model hub."
        audio, rate = synthesize(text)
        answer = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "whisper-1", "temperature": "0"},
                            files={"file": ("a.wav", wav_bytes(audio, rate))}, timeout=120)
        assert answer.status_code == 200 and wer(text, answer.json()["text"]) <= 0.2, answer.text
    finally:
        server.__exit__(None, None, None)


def _wait_for_weights(url: str) -> dict:
    """/readyz once the service answers it and its fetch has resolved the revision."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            body = httpx.get(url + "/readyz", timeout=5).json()
        except httpx.HTTPError:
            body = {}
        if body.get("weights", {}).get("hub-tiny", {}).get("revision"):
            return body
        time.sleep(0.05)
    raise AssertionError("the service never reported its fetch")


def test_a_path_source_with_a_wrong_sha256_is_not_served(tmp_path):
    import hashlib

    from services.core.runtime.weights import package_dir
    from services.vad.app import create_vad_app

    weights = package_dir("silero_vad") / "data" / "silero_vad.onnx"
    actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    models = []
    for name, sha256 in (("vad-wrong", "0" * 64), ("vad-right", actual)):
        models.append({"name": name, "task": "vad", "backend": "silero",
                       "source": {"path": str(weights), "sha256": sha256}})
    config = parse_config({"models": models})
    with ServerThread(create_vad_app(config.models, config.server.max_upload_bytes)) as service:
        body = httpx.get(service.url + "/readyz", timeout=10).json()
    assert body["models"]["vad-right"] == "ready"
    assert body["models"]["vad-wrong"].startswith("ChecksumMismatch: ")
    assert f"has SHA-256 {actual}, but source.sha256 is {'0' * 64}" in body["models"]["vad-wrong"]
