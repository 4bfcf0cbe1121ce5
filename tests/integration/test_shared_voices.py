"""Several voice-service replicas over one store (SQLite or a real PostgreSQL, and moto's S3): a voice registered
on one replica is listed, read and used by another at once, and gone from every replica once deleted. Nothing
lives in a replica's own disk (each has its own data directory, as each pod has its own emptyDir)."""

from __future__ import annotations

import json

import httpx
import pytest

from services.core.contracts.specs import HarmonyConfig, NamedModel, ObjectStoreSettings
from services.vc.app import create_vc_app
from tests.servers import ServerThread, wait_ready
from tests.speech import espeak, wav_bytes

WORLD = {"name": "world-vc", "task": "vc", "backend": "world", "source": {"package": "pyworld-prebuilt"}}


@pytest.fixture
def replicas(database_url, s3_server, tmp_path):
    bucket = s3_server.new_bucket()
    store = ObjectStoreSettings(url=f"s3://{bucket}/harmony", endpoint_url=s3_server.endpoint_url, region="us-east-1")
    servers = []
    for n in range(2):
        config = HarmonyConfig(data_dir=str(tmp_path / f"pod-{n}"), database={"url": database_url},
                               object_store=store)
        model = NamedModel.model_validate({**WORLD, "options": {"voice_store": str(tmp_path / f"pod-{n}" / "old")}})
        servers.append(ServerThread(create_vc_app([model], config=config)))
    with servers[0] as a, servers[1] as b:
        for server in (a, b):
            wait_ready(server.url)
        yield a.url, b.url, s3_server.client(), bucket


def register(url: str, speech: bytes) -> httpx.Response:
    return httpx.post(url + "/v1/voices", timeout=120, files={"reference": ("r.wav", speech)},
                      data={"model": "world-vc", "name": "shared", "embedding": json.dumps([1 / 16] * 256)})


def convert(url: str, source: bytes, voice: str) -> httpx.Response:
    return httpx.post(url + "/v1/audio/conversions", timeout=120, files={"file": ("s.wav", source)},
                      data={"model": "world-vc", "voice": voice, "response_format": "wav"})


def objects(client, bucket: str) -> list[str]:
    return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_two_voice_service_replicas_share_the_registered_voices(replicas):
    a, b, s3, bucket = replicas
    speech = wav_bytes(*espeak("The quick brown fox jumps over the lazy dog, and then it rests a while.", "en"))
    source = wav_bytes(*espeak("Hello from the other replica.", "en"))

    registered = register(a, speech)
    assert registered.status_code == 200, registered.text
    voice = registered.json()["id"]
    assert objects(s3, bucket) == [f"harmony/voices/{voice}/reference.flac"]

    # the other replica sees it at once: listed, read, used
    assert [v["id"] for v in httpx.get(b + "/v1/voices").json()["data"]] == [voice]
    assert httpx.get(b + f"/v1/voices/{voice}").json()["name"] == "shared"
    converted = convert(b, source, voice)
    assert converted.status_code == 200, converted.text
    assert converted.content[:4] == b"RIFF" and len(converted.content) > 10_000

    # deleted on B: gone on A too (no cache to go stale), object removed from the bucket
    assert httpx.delete(b + f"/v1/voices/{voice}").status_code == 200
    assert httpx.get(a + f"/v1/voices/{voice}").status_code == 404
    assert httpx.get(a + "/v1/voices").json()["data"] == []
    refused = convert(a, source, voice)
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "voice_not_found"
    assert objects(s3, bucket) == []
