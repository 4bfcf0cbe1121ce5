"""URL sources against real servers on loopback: https (a file server with ranges), S3 (moto's server) and
gs:// (Cloud Storage's download path on the same file server, as an emulator serves it)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from services.core.contracts.specs import ModelSource
from services.core.runtime.weights import WeightsError
from services.weights.cache import ModelCache
from services.weights.download import ChecksumMismatch
from services.weights.fetch import fetch
from services.weights.remotes import RemoteDenied, RemoteNotFound

WEIGHTS = bytes(range(256)) * 40_000  # 10,240,000 bytes


@pytest.fixture
def files(file_server, monkeypatch):
    monkeypatch.delenv("HARMONY_OFFLINE", raising=False)
    file_server.reset()
    monkeypatch.setattr(file_server, "token", None)
    return file_server


@pytest.fixture
def cache(tmp_path) -> ModelCache:
    return ModelCache(tmp_path / "cache")


def _tgz(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"model/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_file_by_https_with_its_sha256(files, cache):
    url = files.put("one/model.onnx", WEIGHTS)
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    path = fetch(ModelSource(url=url, sha256=digest), cache=cache)
    assert path.name == "model.onnx" and path.read_bytes() == WEIGHTS
    assert [method for method, *_ in files.requests] == ["HEAD", "GET"]  # its size and ETag asked once
    assert path.stat().st_ino == cache.blob(digest).stat().st_ino
    files.reset()
    assert fetch(ModelSource(url=url, sha256=digest), cache=cache) == path and files.requests == []


def test_a_sha256_mismatch_names_both_figures_and_keeps_nothing(files, cache):
    url = files.put("two/model.onnx", WEIGHTS)
    wrong = "f" * 64
    with pytest.raises(ChecksumMismatch) as caught:
        fetch(ModelSource(url=url, sha256=wrong), cache=cache)
    assert str(caught.value) == (f"{url} has SHA-256 {hashlib.sha256(WEIGHTS).hexdigest()}, but source.sha256 is "
                                 f"{wrong}")
    assert not list(cache.root.glob("blobs/sha256/*")) and not list(cache.root.glob("models/*/*/*"))


def test_an_archive_is_unpacked_and_its_files_deduplicated(files, cache):
    shared = b"tokenizer" * 1000
    first = fetch(ModelSource(url=files.put("a.tar.gz", _tgz({"model.bin": WEIGHTS, "tokenizer.json": shared}))),
                  cache=cache)
    second = fetch(ModelSource(url=files.put("b.tgz", _tgz({"model.bin": b"other", "tokenizer.json": shared}))),
                   cache=cache)
    assert sorted(p.name for p in first.iterdir() if not p.name.startswith(".")) == ["model.bin", "tokenizer.json"]
    assert (first / "model.bin").read_bytes() == WEIGHTS
    assert (first / "tokenizer.json").stat().st_ino == (second / "tokenizer.json").stat().st_ino


def test_a_cut_download_resumes_with_a_range(files, cache):
    url = files.put("three/model.bin", WEIGHTS)
    files.cut_next("/three/model.bin", 4_000_000)
    path = fetch(ModelSource(url=url), cache=cache)
    assert path.read_bytes() == WEIGHTS
    assert [r for m, p, s, r in files.requests if m == "GET"] == [None, "bytes=4000000-"]
    assert files.bytes_served["/three/model.bin"] == len(WEIGHTS)


def test_a_file_that_changed_since_the_cut_is_fetched_again_whole(files, cache, monkeypatch):
    url = files.put("four/model.bin", WEIGHTS)
    monkeypatch.setenv("HARMONY_DOWNLOAD_ATTEMPTS", "1")
    files.cut_next("/four/model.bin", 3_000_000)
    with pytest.raises(WeightsError, match="download failed 1 times"):
        fetch(ModelSource(url=url), cache=cache)
    changed = WEIGHTS[::-1]
    files.put("four/model.bin", changed)
    files.reset()
    assert fetch(ModelSource(url=url), cache=cache).read_bytes() == changed
    assert files.bytes_served["/four/model.bin"] == len(changed)  # nothing of the old file was kept


def test_https_errors_are_clear(files, cache):
    with pytest.raises(RemoteNotFound, match=r"http://127.0.0.1:\d+/missing.bin: 404 not found"):
        fetch(ModelSource(url=files.url_for("missing.bin")), cache=cache)


def test_s3_through_boto3(s3_server, cache, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    bucket = s3_server.new_bucket()
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="whisper/model.tgz", Body=_tgz({"model.bin": WEIGHTS, "config.json": b"{}"}))
    path = fetch(ModelSource(url=f"s3://{bucket}/whisper/model.tgz"), cache=cache)
    assert (path / "model.bin").read_bytes() == WEIGHTS and (path / "config.json").read_bytes() == b"{}"
    with pytest.raises(RemoteNotFound, match=f"s3://{bucket}/whisper/nothing.bin: not found"):
        fetch(ModelSource(url=f"s3://{bucket}/whisper/nothing.bin"), cache=cache)


def test_s3_resumes_a_stopped_download(s3_server, cache, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="m.bin", Body=WEIGHTS)
    # an earlier process stopped after 6 MB: its partial file and the object's ETag are in the cache
    from services.weights.cache import short_hash
    from services.weights.labels import redact

    url = f"s3://{bucket}/m.bin"
    key = f"url-{short_hash(redact(url), '')}"
    part = cache.partial(key)
    part.write_bytes(WEIGHTS[:6_000_000])
    etag = s3_server.client().head_object(Bucket=bucket, Key="m.bin")["ETag"]
    part.with_name(part.name + ".json").write_text(json.dumps({"etag": etag, "size": len(WEIGHTS)}))
    seen = []
    path = fetch(ModelSource(url=url), cache=cache, listener=seen.append)
    assert path.read_bytes() == WEIGHTS
    assert seen[-1].bytesDone == len(WEIGHTS) and not part.exists()
    done = [s.bytesDone for s in seen]
    assert 6_000_000 in done and done == sorted(done)  # resumed from 6 MB (a restart would go back to 0)


def test_gs_through_the_download_endpoint_with_a_token(files, cache, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", files.url)
    files.put("download/storage/v1/b/models/o/whisper/model.bin", WEIGHTS)
    monkeypatch.setattr(files, "token", "ya29.test-token")  # the session's server is open again afterwards
    source = ModelSource(url="gs://models/whisper/model.bin")
    monkeypatch.delenv("GOOGLE_OAUTH_ACCESS_TOKEN", raising=False)
    with pytest.raises(RemoteDenied, match="gs://models/whisper/model.bin: 401 .*GOOGLE_OAUTH_ACCESS_TOKEN"):
        fetch(source, cache=cache)
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.test-token")
    assert fetch(source, cache=cache).read_bytes() == WEIGHTS
