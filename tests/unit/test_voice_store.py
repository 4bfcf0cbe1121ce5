"""The registered-voice store on SQLite and PostgreSQL, each with a directory and an S3 bucket (moto):
round trip, restart, atomic writes and deletes, orphan sweep, the one-time import of the old layout."""

from __future__ import annotations

import json
import logging

import pytest

from services.core.contracts.errors import NotFound
from services.core.contracts.specs import HarmonyConfig, NamedModel, ObjectStoreSettings
from services.store import open_database
from services.store.objects import (
    DirectoryObjectStore,
    ObjectMissing,
    S3ObjectStore,
    object_store_settings,
    open_object_store,
)
from services.vc.voices import VoiceRecord, VoiceStore, reference_key

FLAC = b"fLaC" + bytes(range(256)) * 8  # the store keeps bytes as given


def record(name: str = "alpha", created_at: int = 1_780_000_000, owner: str | None = None) -> VoiceRecord:
    return VoiceRecord(id=VoiceStore.new_id(), name=name, created_at=created_at, embedding=[0.6, 0.8],
                       embedding_model="resemblyzer", converter="world-vc",
                       stats={"f0": {"mean": 5.1, "std": 0.2}, "envelope": [[1.0, 2.0], [3.0, 4.0]]},
                       speech_seconds=4.25, reference_files=2, reference_sample_rate=24000, owner_key_id=owner)


@pytest.fixture
def open_store(database_url, object_store_settings, tmp_path):
    """Open the store as a starting voice service would: each call is a fresh process's view."""
    opened = []

    def open_() -> VoiceStore:
        db = open_database(url=database_url)
        opened.append(db)
        return VoiceStore(db, open_object_store(object_store_settings, str(tmp_path / "data")))

    yield open_
    for db in opened:
        db.dispose()


class FailingPut:
    """An object store whose writes fail (a full disk, an S3 outage); reads and deletes pass through."""

    def __init__(self, inner) -> None:
        self.inner, self.url = inner, inner.url

    def put(self, key: str, data: bytes) -> None:
        raise OSError("no space left on device")

    def __getattr__(self, name):
        return getattr(self.inner, name)


class FailingDelete(FailingPut):
    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def delete(self, key: str) -> None:
        raise OSError("object store unreachable")


def test_round_trip(open_store):
    store = open_store()
    first, second = record("alpha", owner="key_abc"), record("beta", created_at=1_780_000_100)
    store.add(second, FLAC[:100])
    store.add(first, FLAC)
    assert store.get(first.id) == first and store.get(first.id).owner_key_id == "key_abc"
    assert [v.id for v in store.list()] == [first.id, second.id]  # by created_at
    assert store.reference(first.id) == FLAC
    assert "stats" not in store.get(first.id).public().model_dump()
    store.delete(first.id)
    for missing in (lambda: store.get(first.id), lambda: store.reference(first.id), lambda: store.delete(first.id)):
        with pytest.raises(NotFound):
            missing()
    with pytest.raises(ObjectMissing):
        store.objects.get(reference_key(first.id))
    assert [v.id for v in store.list()] == [second.id]
    with pytest.raises(NotFound):
        store.get("../../etc/passwd")


def test_voices_survive_a_restart(open_store):
    voice = open_store().add(record(), FLAC)
    again = open_store()  # a new database connection and object store client over the same places
    assert again.get(voice.id) == voice and again.reference(voice.id) == FLAC
    again.delete(voice.id)
    assert open_store().list() == []


def test_a_failed_object_write_leaves_no_row(open_store):
    store = open_store()
    broken = VoiceStore(store.db, FailingPut(store.objects))
    voice = record()
    with pytest.raises(OSError):
        broken.add(voice, FLAC)
    assert store.list() == []
    with pytest.raises(NotFound):
        store.get(voice.id)


def test_a_failed_row_insert_removes_the_object(open_store, monkeypatch):
    store = open_store()
    voice = record()

    def no_database():
        raise ConnectionError("database went away")

    monkeypatch.setattr(store.db.engine, "begin", no_database)
    with pytest.raises(ConnectionError):
        store.add(voice, FLAC)
    monkeypatch.undo()
    assert store.list() == [] and store.objects.keys("voices/") == {}


def test_delete_removes_the_row_first(open_store, caplog):
    """An object that cannot be removed leaves an invisible orphan, never a listed voice; the sweep removes it."""
    store = open_store()
    voice = store.add(record(), FLAC)
    kept = store.add(record("kept"), FLAC)
    with caplog.at_level(logging.WARNING, logger="harmony.voices"):
        VoiceStore(store.db, FailingDelete(store.objects)).delete(voice.id)
    assert "could not remove voice object" in caplog.text
    assert [v.id for v in store.list()] == [kept.id]
    with pytest.raises(NotFound):
        store.reference(voice.id)
    assert store.sweep_orphans() == []  # young objects may belong to a registration in flight
    assert store.sweep_orphans(older_than_s=-60) == [reference_key(voice.id)]
    assert list(store.objects.keys("voices/")) == [reference_key(kept.id)]
    assert store.reference(kept.id) == FLAC


def old_voice(root, voice: VoiceRecord, audio: bytes = FLAC) -> None:
    folder = root / voice.id
    folder.mkdir(parents=True)
    (folder / "voice.json").write_text(voice.model_dump_json(exclude={"owner_key_id"}))
    (folder / "reference.flac").write_bytes(audio)


def test_old_voice_directory_is_imported_once(open_store, tmp_path, caplog):
    old = tmp_path / "old-voices"
    voices = [record("one"), record("two", created_at=1_780_000_500)]
    for voice in voices:
        old_voice(old, voice)
    (old / "voice_0000000000000000").mkdir()
    (old / "voice_0000000000000000" / "voice.json").write_text("{not json")
    store = open_store()
    with caplog.at_level(logging.WARNING, logger="harmony.voices"):
        assert store.import_directory(old) == 2
    assert "imported 2 registered voice(s)" in caplog.text and str(old) in caplog.text
    assert [v.id for v in store.list()] == [v.id for v in voices]
    assert store.get(voices[0].id).stats == voices[0].stats and store.reference(voices[1].id) == FLAC
    store.delete(voices[0].id)
    assert open_store().import_directory(old) is None  # once: a deleted voice does not come back
    assert [v.id for v in store.list()] == [voices[1].id]
    assert store.import_directory(tmp_path / "nothing-here") is None


def test_directory_store_keys_are_confined(tmp_path):
    objects = DirectoryObjectStore(tmp_path / "objects")
    for bad in ("../x", "a//b", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            objects.put(bad, b"x")
    objects.put("voices/v/reference.flac", b"1")
    objects.put("voices/v/reference.flac", b"2")
    assert objects.get("voices/v/reference.flac") == b"2" and list(objects.keys()) == ["voices/v/reference.flac"]
    objects.delete("voices/v/reference.flac")
    objects.delete("voices/v/reference.flac")  # nothing there: no error
    assert list((tmp_path / "objects").iterdir()) == []  # empty folders go too


def test_where_the_store_is_configured(tmp_path, monkeypatch):
    monkeypatch.delenv("HARMONY_OBJECT_STORE_URL", raising=False)
    default = open_object_store(object_store_settings(), str(tmp_path))
    assert isinstance(default, DirectoryObjectStore) and default.root == tmp_path / "objects"
    monkeypatch.setenv("HARMONY_OBJECT_STORE_URL", "s3://from-env/p")
    monkeypatch.setenv("HARMONY_OBJECT_STORE_ENDPOINT_URL", "http://minio:9000")
    assert object_store_settings() == ObjectStoreSettings(url="s3://from-env/p", endpoint_url="http://minio:9000")
    configured = ObjectStoreSettings(url="s3://from-config")
    assert object_store_settings(configured) == configured
    options = {"object_store_url": "s3://from-options/x", "object_store_region": "eu-west-1"}
    assert object_store_settings(configured, options) == ObjectStoreSettings(url="s3://from-options/x",
                                                                             region="eu-west-1")
    s3 = S3ObjectStore("s3://bucket/a/b/", client=object())
    assert (s3.bucket, s3.prefix) == ("bucket", "a/b/")
    with pytest.raises(ValueError):
        S3ObjectStore("http://bucket/a", client=object())
    assert isinstance(open_object_store(ObjectStoreSettings(url=f"file://{tmp_path}/o")), DirectoryObjectStore)
    config = HarmonyConfig.model_validate({"object_store": {"url": "s3://b/p", "endpoint_url": "http://x:9000"}})
    assert config.object_store.endpoint_url == "http://x:9000"


def test_voice_service_opens_the_shared_database_and_imports_old_voices(tmp_path, monkeypatch, s3_server):
    """What create_vc_app does at start: the router's database, the vc model's object store, the old directory."""
    from services.vc.app import open_voice_store

    bucket = s3_server.new_bucket()
    old = tmp_path / "old"
    voice = record()
    old_voice(old, voice)
    spec = NamedModel.model_validate({
        "name": "world-vc", "task": "vc", "backend": "world", "source": {"package": "pyworld-prebuilt"},
        "options": {"voice_store": str(old), "object_store_url": f"s3://{bucket}/voices-test",
                    "object_store_endpoint_url": s3_server.endpoint_url}})
    config = HarmonyConfig(data_dir=str(tmp_path / "data"))
    store = open_voice_store(spec, config)
    try:
        assert store.db.url.endswith(str(tmp_path / "data" / "harmony.db"))
        assert store.get(voice.id).name == voice.name
        keys = [item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert keys == [f"voices-test/{reference_key(voice.id)}"]
        assert json.loads((old / voice.id / "voice.json").read_text())["id"] == voice.id  # left as it was
    finally:
        store.db.dispose()


def test_voice_service_in_a_pod_refuses_an_ephemeral_object_store(tmp_path, monkeypatch):
    from services.core.contracts.specs import ConfigError
    from services.vc.app import open_voice_store

    monkeypatch.delenv("HARMONY_OBJECT_STORE_URL", raising=False)
    monkeypatch.setenv("HARMONY_OBJECT_STORE_REQUIRED", "true")  # the operator sets it on vc pods
    spec = NamedModel.model_validate({"name": "world-vc", "task": "vc", "backend": "world",
                                      "source": {"package": "pyworld-prebuilt"}})
    with pytest.raises(ConfigError, match="voices.objectStore.url"):
        open_voice_store(spec, HarmonyConfig(data_dir=str(tmp_path)))
