"""Hugging Face sources through the real huggingface_hub client against a real Hub mirror (olah) on loopback:
pull, revision pinning, checksums, resumed and shared downloads, offline mode, private and gated repositories."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.contracts.specs import ModelSource
from services.core.runtime.weights import WeightsError
from services.weights.cache import ModelCache
from services.weights.download import ChecksumMismatch
from services.weights.fetch import OfflineMissing, fetch
from services.weights.remotes import RemoteDenied, RemoteNotFound
from tests.hub_mirror import BASE, GATED, KOKORO, PIPER, PRIVATE, TINY

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL_BIN = 75_537_502


@pytest.fixture
def hub(hub_mirror, monkeypatch):
    """The mirror as this process's Hub, with no token and counts from zero."""
    for key, value in hub_mirror.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HARMONY_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(ROOT / ".cache" / "no-hf-home"))  # no token stored by `hf auth login`
    hub_mirror.reset()
    return hub_mirror


@pytest.fixture
def cache(tmp_path) -> ModelCache:
    return ModelCache(tmp_path / "cache")


def test_pull_a_repository_verifies_every_file_and_pins_the_commit(hub, cache):
    seen = []
    path = fetch(ModelSource(hf={"repo": TINY}), cache=cache, listener=seen.append)
    head = hub.commits[TINY][-1]
    assert path == cache.model_dir("hf", TINY, head)
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith(".")) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]  # README and .gitattributes are skipped
    assert (path / "model.bin").stat().st_size == TINY_MODEL_BIN
    assert hashlib.sha256((path / "model.bin").read_bytes()).hexdigest() == hub.files[TINY]["model.bin"]["sha256"]
    assert cache.read_ref(TINY, "main") == head
    assert seen[-1].phase == "ready" and seen[-1].revision == head and seen[-1].bytesDone == seen[-1].bytesTotal
    assert any(s.phase == "downloading" for s in seen)
    assert hub.gets("/model.bin") == 1
    # a second pull asks the Hub for the commit only and reuses the cache
    hub.reset()
    assert fetch(ModelSource(hf={"repo": TINY}), cache=cache) == path
    assert hub.gets("/model.bin") == 0


def test_revision_pinned_by_tag_or_commit(hub, cache):
    old, new = hub.commits[TINY][0], hub.commits[TINY][-1]
    by_tag = fetch(ModelSource(hf={"repo": TINY, "revision": "v1", "files": ["*"]}), cache=cache)
    by_sha = fetch(ModelSource(hf={"repo": TINY, "revision": old, "files": ["*"]}), cache=cache)
    latest = fetch(ModelSource(hf={"repo": TINY, "files": ["*"]}), cache=cache)
    assert by_tag == by_sha != latest
    assert old in str(by_tag) and new in str(latest)
    assert "v1" in (by_tag / "README.md").read_text() and "v2" in (latest / "README.md").read_text()
    # the weights are the same bytes in both commits: stored once
    assert (by_tag / "model.bin").stat().st_ino == (latest / "model.bin").stat().st_ino
    assert hub.gets("/model.bin") == 1


def test_a_piper_voice_of_many_by_its_files(hub, cache):
    path = fetch(ModelSource(hf={"repo": PIPER, "files": ["*/en_US-joe-medium.onnx", "*/en_US-joe-medium.onnx.json"]}),
                 cache=cache)
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()
                  and not p.name.startswith(".")) == ["en/en_US/joe/medium/en_US-joe-medium.onnx",
                                                      "en/en_US/joe/medium/en_US-joe-medium.onnx.json"]
    assert hub.gets("voices.json") == 0


def test_a_checksum_mismatch_names_both_figures(hub, cache):
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as caught:
        fetch(ModelSource(hf={"repo": TINY}, sha256=wrong), cache=cache)
    assert f"model.bin has SHA-256 {hub.files[TINY]['model.bin']['sha256']}, but source.sha256 is {wrong}" \
        in str(caught.value)
    assert hub.gets("/model.bin") == 0  # refused before a byte of it was fetched
    right = hub.files[TINY]["model.bin"]["sha256"]
    assert fetch(ModelSource(hf={"repo": TINY}, sha256=right), cache=cache).is_dir()


def test_a_download_cut_mid_file_resumes_where_it_stopped(hub, cache):
    hub.cut_next("/model.bin", 20_000_000)
    path = fetch(ModelSource(hf={"repo": TINY}), cache=cache)
    assert hashlib.sha256((path / "model.bin").read_bytes()).hexdigest() == hub.files[TINY]["model.bin"]["sha256"]
    ranges = [r for method, p, status, r in hub.requests if method == "GET" and p.endswith("/model.bin")]
    assert ranges[0] is None and ranges[1] == "bytes=20000000-", ranges
    served = sum(n for p, n in hub.bytes_served.items() if p.endswith("/model.bin"))
    assert served == TINY_MODEL_BIN  # nothing sent twice


def test_a_stopped_pull_resumes_in_the_next_process_and_offline_names_what_is_missing(hub, cache, monkeypatch):
    monkeypatch.setenv("HARMONY_DOWNLOAD_ATTEMPTS", "1")  # the first try is the last: as if the process died
    hub.cut_next("/model.bin", 30_000_000)
    with pytest.raises(WeightsError, match="download failed 1 times .* the next try resumes"):
        fetch(ModelSource(hf={"repo": TINY}), cache=cache)
    with pytest.raises(OfflineMissing, match=r"1 of 4 files missing: model.bin \(75,537,502 bytes\)"):
        fetch(ModelSource(hf={"repo": TINY}), cache=cache, offline=True)
    hub.reset()
    path = fetch(ModelSource(hf={"repo": TINY}), cache=cache)
    assert [r for m, p, s, r in hub.requests if m == "GET" and p.endswith("/model.bin")] == ["bytes=30000000-"]
    assert sum(n for p, n in hub.bytes_served.items() if p.endswith("/model.bin")) == TINY_MODEL_BIN - 30_000_000
    assert hashlib.sha256((path / "model.bin").read_bytes()).hexdigest() == hub.files[TINY]["model.bin"]["sha256"]
    assert not list((cache.root / "downloads").glob("*.part"))


def test_offline_mode_uses_the_cache_and_never_the_network(hub, cache, monkeypatch):
    path = fetch(ModelSource(hf={"repo": TINY}), cache=cache)
    hub.reset()
    monkeypatch.setenv("HARMONY_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: any request would fail
    assert fetch(ModelSource(hf={"repo": TINY}), cache=cache) == path  # "main" read from the ref the pull kept
    assert fetch(ModelSource(hf={"repo": TINY, "revision": hub.commits[TINY][-1]}), cache=cache) == path
    with pytest.raises(OfflineMissing, match=r"offline: hf://Systran/faster-whisper-base@main is not in the cache"):
        fetch(ModelSource(hf={"repo": BASE}), cache=cache)
    assert hub.requests == []


def test_a_private_repository_needs_the_token(hub, cache, monkeypatch):
    with pytest.raises(RemoteNotFound, match="repository not found .a private repository needs HF_TOKEN"):
        fetch(ModelSource(hf={"repo": PRIVATE}), cache=cache)
    with pytest.raises(RemoteDenied, match="gated: accept its terms on the Hub and set HF_TOKEN"):
        fetch(ModelSource(hf={"repo": GATED}), cache=cache)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert (fetch(ModelSource(hf={"repo": PRIVATE}), cache=cache) / "model.bin").stat().st_size == TINY_MODEL_BIN
    assert fetch(ModelSource(hf={"repo": GATED}), cache=cache).is_dir()


def test_an_unknown_repository_or_revision(hub, cache):
    with pytest.raises(RemoteNotFound, match="hf://nobody/nothing@main .* repository not found"):
        fetch(ModelSource(hf={"repo": "nobody/nothing"}), cache=cache)
    with pytest.raises(RemoteNotFound, match="hf://Systran/faster-whisper-tiny.en@v9 .*not found"):
        fetch(ModelSource(hf={"repo": TINY, "revision": "v9"}), cache=cache)
    with pytest.raises(RemoteNotFound, match=r"no file matches \['\*.safetensors'\]"):
        fetch(ModelSource(hf={"repo": TINY, "files": ["*.safetensors"]}), cache=cache)


def _pull(hub, cache_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, **hub.env(), "HARMONY_CACHE_DIR": str(cache_dir)}
    env.pop("HF_TOKEN", None)
    return subprocess.Popen([sys.executable, "-m", "services.cli", "pull", "--json", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_pulling_the_same_model_download_it_once(hub, tmp_path):
    first, second = (_pull(hub, tmp_path / "shared", BASE) for _ in range(2))
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outputs
    finals = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert finals[0]["phase"] == finals[1]["phase"] == "ready"
    assert finals[0]["path"] == finals[1]["path"] and finals[0]["revision"] == hub.commits[BASE][-1]
    assert hub.gets("/model.bin") == 1
    model = Path(finals[0]["path"]) / "model.bin"
    assert model.stat().st_size == 145_217_532


def test_harmony_pull_and_models_on_the_command_line(hub, tmp_path):
    log = tmp_path / "termination-log"
    pulled = _pull(hub, tmp_path / "c", f"{PIPER}:en_US-joe-medium", TINY, "--termination-log", str(log))
    out, err = pulled.communicate(timeout=300)
    assert pulled.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {line["model"] for line in lines} == {"en-us-joe-medium", "faster-whisper-tiny.en"}
    final = json.loads(log.read_text())
    assert final["phase"] == "ready" and final["revision"] == hub.commits[TINY][-1]
    listed = subprocess.run([sys.executable, "-m", "services.cli", "models", "--json",
                             "--cache-dir", str(tmp_path / "c")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    listing = json.loads(listed.stdout)
    assert sorted(m["source"].split("@")[0] for m in listing["models"]) == [f"hf://{TINY}", f"hf://{PIPER}"]
    assert listing["bytes_on_disk"] == sum(m["size"] for m in listing["models"])
    failed = _pull(hub, tmp_path / "c", "nobody/nothing")
    out, err = failed.communicate(timeout=60)
    assert failed.returncode == 1 and "repository not found" in json.loads(out.splitlines()[-1])["message"]


@pytest.mark.parametrize("reference, task, backend, options", [
    (TINY, "stt", "faster-whisper", {}),
    (f"{PIPER}:en_US-joe-medium", "tts", "piper", {"voice": "en_US-joe-medium"}),
    (KOKORO, "tts", "kokoro", {}),
])
def test_what_a_fetched_repository_is_served_as(hub, cache, monkeypatch, reference, task, backend, options):
    from services.weights.named_models import model_for
    from services.weights.references import parse_reference

    parsed = parse_reference(reference)
    model = model_for(parsed, fetch(parsed.source, cache=cache), taken={"whisper-1"})
    assert (model.task.value, model.backend) == (task, backend)
    assert options.items() <= model.options.items()
    assert model.source == parsed.source  # the service fetches it again (from the cache) when it loads
    assert ("tts-1" in model.aliases) == (task == "tts") and "whisper-1" not in model.aliases
    if backend == "kokoro":
        assert model.languages == ["ja"]


def test_a_cache_that_cannot_be_written_still_serves_what_it_holds(hub, cache):
    import shutil

    path = fetch(ModelSource(hf={"repo": TINY}), cache=cache)
    shutil.rmtree(cache.root / "refs")
    (cache.root / "refs").write_text("a file where the folder was: nothing can be written under it")
    assert fetch(ModelSource(hf={"repo": TINY}), cache=cache) == path  # as a ReadOnlyMany volume filled elsewhere
    shutil.rmtree(cache.root / "locks")
    (cache.root / "locks").write_text("")
    with pytest.raises(WeightsError, match="is not writable .* fill it once with `harmony pull`"):
        fetch(ModelSource(hf={"repo": BASE}), cache=cache)
