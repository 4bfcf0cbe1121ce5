"""The test infrastructure for model sources: the Hub mirror (tests/hub_mirror.py) and the file server
(tests/file_server.py), checked with the real huggingface_hub client and plain httpx."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.hub_mirror import BASE, GATED, KOKORO, PIPER, PIPER_DIR, PRIVATE, TINY

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
)


@pytest.fixture
def hub(hub_mirror, monkeypatch):
    hub_mirror.patch(monkeypatch)
    hub_mirror.reset()
    yield hub_mirror
    hub_mirror.reset()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_snapshot(folder: Path, expected: dict[str, dict]) -> None:
    got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert got == sorted(expected)
    for name, meta in expected.items():
        assert (folder / name).stat().st_size == meta["size"], name
        assert _sha256(folder / name) == meta["sha256"], name


@pytest.mark.parametrize("repo", [TINY, BASE, PIPER, KOKORO])
def test_snapshot_download_gives_every_file(hub, tmp_path, repo):
    folder = Path(snapshot_download(repo, cache_dir=tmp_path, token=False))
    assert folder.name == hub.commits[repo][-1]
    _check_snapshot(folder, hub.files[repo])
    if repo == TINY:
        assert set(hub.files[TINY]) >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt", "README.md"}
        assert hub.files[TINY]["model.bin"]["size"] > 70_000_000
    if repo == BASE:
        from services.stt.weights import WHISPER_BASE_SHA256
        assert (hub.files[BASE]["model.bin"]["size"], hub.files[BASE]["model.bin"]["sha256"]) == \
            (145_217_532, WHISPER_BASE_SHA256)
    if repo == PIPER:
        voices = json.loads((folder / "voices.json").read_text())
        voice = voices["en_US-joe-medium"]
        assert voice["language"]["code"] == "en_US" and voice["quality"] == "medium"
        for path, meta in voice["files"].items():
            data = (folder / path).read_bytes()
            assert len(data) == meta["size_bytes"] and hashlib.md5(data).hexdigest() == meta["md5_digest"]
        assert f"{PIPER_DIR}/en_US-joe-medium.onnx" in voice["files"]
    if repo == KOKORO:
        import numpy as np

        from services.tts.backends.kokoro import KOKORO_V1_INT8_SHA256
        assert hub.files[KOKORO]["onnx/model_quantized.onnx"]["sha256"] == KOKORO_V1_INT8_SHA256
        with np.load(folder / "voices_ja.npz") as npz:
            for name in npz.files:
                single = np.fromfile(folder / "voices" / f"{name}.bin", dtype="<f4").reshape(-1, 1, 256)
                assert np.array_equal(single, npz[name])
        assert json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["vocab"] == \
            json.loads((folder / "config.json").read_text(encoding="utf-8"))["vocab"]
    # every file went over the wire once, and the bytes counted are the files' sizes
    for name, meta in hub.files[repo].items():
        assert hub.gets(f"/{name}") == 1, name
        served = sum(n for p, n in hub.bytes_served.items() if p.endswith(f"/resolve/{folder.name}/{name}"))
        assert served == meta["size"]


def test_model_info_gives_commit_sizes_and_lfs_sha256(hub):
    info = HfApi(token=False).model_info(TINY, files_metadata=True)
    assert info.sha == hub.commits[TINY][-1]
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == set(hub.files[TINY])
    for name, meta in hub.files[TINY].items():
        assert siblings[name].size == meta["size"], name
        assert siblings[name].blob_id == meta["blob"], name  # the git blob id (of the LFS pointer for LFS files)
        if meta["lfs"]:
            assert siblings[name].lfs.sha256 == meta["sha256"] and siblings[name].lfs.size == meta["size"]
        else:
            assert siblings[name].lfs is None
    tree = {f.path: f for f in HfApi(token=False).list_repo_tree(PIPER, recursive=True) if hasattr(f, "size")}
    onnx = f"{PIPER_DIR}/en_US-joe-medium.onnx"
    assert tree[onnx].lfs.sha256 == hub.files[PIPER][onnx]["sha256"]
    assert all(path.startswith("/api/") for _, path, _, _ in hub.requests)  # no redirect left the proxy


def test_head_on_resolve_gives_commit_etag_and_size(hub):
    head = httpx.head(hub.url(TINY, "model.bin"))
    assert head.status_code == 200
    assert head.headers["x-repo-commit"] == hub.commits[TINY][-1]
    assert head.headers["etag"].strip('"') == hub.files[TINY]["model.bin"]["sha256"]  # LFS: the SHA-256
    assert int(head.headers["content-length"]) == hub.files[TINY]["model.bin"]["size"]
    assert "x-linked-etag" not in head.headers and "x-linked-size" not in head.headers  # olah sends neither
    small = httpx.head(hub.url(TINY, "config.json"))
    assert small.headers["etag"].strip('"') == hub.files[TINY]["config.json"]["blob"]  # not LFS: the git blob id
    meta = hf.get_hf_file_metadata(hub.url(TINY, "model.bin"))
    assert (meta.commit_hash, meta.etag, meta.size) == (hub.commits[TINY][-1], hub.files[TINY]["model.bin"]["sha256"],
                                                         hub.files[TINY]["model.bin"]["size"])


def test_revision_pinned_by_tag_or_sha_gives_the_older_readme(hub, tmp_path):
    first, second = hub.commits[TINY]
    assert hub.tags[TINY] == {"v1": first}
    for revision in ("v1", first):
        readme = Path(hf_hub_download(TINY, "README.md", revision=revision, cache_dir=tmp_path, token=False))
        assert "v1" in readme.read_text() and readme.parent.name == first
    latest = Path(hf_hub_download(TINY, "README.md", cache_dir=tmp_path, token=False))
    assert "v2" in latest.read_text() and latest.parent.name == second
    assert HfApi(token=False).model_info(TINY, revision="v1").sha == first
    refs = HfApi(token=False).list_repo_refs(TINY)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": second}
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": first}
    # the weights are the same file in both commits
    old = Path(hf_hub_download(TINY, "config.json", revision="v1", cache_dir=tmp_path, token=False))
    assert _sha256(old) == hub.files[TINY]["config.json"]["sha256"]


def test_private_repo_needs_the_token(hub, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(PRIVATE, cache_dir=tmp_path / "anon", token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(PRIVATE, "config.json", cache_dir=tmp_path / "anon", token=False)
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token="hf_wrong").model_info(PRIVATE)
    answer = httpx.get(hub.url(PRIVATE, "config.json"))
    assert answer.status_code == 401 and answer.headers["x-error-code"] == "RepoNotFound"
    assert answer.json() == {"error": "Repository Not Found"}
    folder = Path(snapshot_download(PRIVATE, cache_dir=tmp_path / "auth", token=hub.token))
    _check_snapshot(folder, hub.files[PRIVATE])
    assert HfApi(token=hub.token).model_info(PRIVATE).sha == hub.commits[PRIVATE][-1]


def test_gated_repo_and_missing_things(hub, tmp_path):
    with pytest.raises(GatedRepoError):
        hf_hub_download(GATED, "config.json", cache_dir=tmp_path, token=False)
    with pytest.raises(GatedRepoError):
        hf_hub_download(GATED, "config.json", cache_dir=tmp_path, token="hf_wrong")
    assert httpx.get(hub.url(GATED, "config.json")).status_code == 401
    assert httpx.get(hub.url(GATED, "config.json"), headers={"Authorization": "Bearer x"}).status_code == 403
    path = hf_hub_download(GATED, "config.json", cache_dir=tmp_path, token=hub.token)
    assert _sha256(Path(path)) == hub.files[GATED]["config.json"]["sha256"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(TINY, "no-such-file.bin", cache_dir=tmp_path, token=False)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/no-such-repo", "config.json", cache_dir=tmp_path, token=False)
    with pytest.raises(HfHubHTTPError):
        HfApi(token=False).model_info("nobody/no-such-repo")


def test_counts_and_reset(hub, tmp_path):
    hf_hub_download(TINY, "config.json", cache_dir=tmp_path, token=False)
    assert hub.gets("/config.json") == 1
    hf_hub_download(TINY, "config.json", cache_dir=tmp_path, token=False)  # cached: a HEAD, no GET
    assert hub.gets("/config.json") == 1
    assert [m for m, p, _, _ in hub.requests if p.endswith("/config.json")] == ["HEAD", "GET", "HEAD"]
    hub.reset()
    assert hub.counts == {} and hub.requests == [] and hub.bytes_served == {}


def test_two_processes_pulling_at_once_download_once(hub, tmp_path):
    script = ("import sys; from huggingface_hub import hf_hub_download; "
              "print(hf_hub_download(sys.argv[1], 'model.bin', cache_dir=sys.argv[2]))")
    env = {**os.environ, **hub.env()}
    procs = [subprocess.Popen([sys.executable, "-c", script, TINY, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    paths = {Path(out.strip().splitlines()[-1]) for out, _ in outs}
    assert len(paths) == 1 and _sha256(paths.pop()) == hub.files[TINY]["model.bin"]["sha256"]
    assert hub.gets("/model.bin") == 1
    served = sum(n for p, n in hub.bytes_served.items() if p.endswith("/model.bin"))
    assert served == hub.files[TINY]["model.bin"]["size"]


def test_olah_ignores_range_and_the_proxy_serves_it(hub):
    url = f"{hub.olah_url}/{TINY}/resolve/main/config.json"
    direct = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert direct.status_code == 200 and len(direct.content) == hub.files[TINY]["config.json"]["size"]
    whole = httpx.get(hub.url(TINY, "config.json")).content
    for rng, start, end in (("bytes=10-19", 10, 19), ("bytes=2300-", 2300, len(whole) - 1), ("bytes=-7", len(whole) - 7,
                                                                                            len(whole) - 1)):
        part = httpx.get(hub.url(TINY, "config.json"), headers={"Range": rng})
        assert part.status_code == 206, rng
        assert part.content == whole[start:end + 1]
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(whole)}"
    size = hub.files[TINY]["model.bin"]["size"]
    tail = httpx.get(hub.url(TINY, "model.bin"), headers={"Range": f"bytes={size - 100}-"})
    assert tail.status_code == 206 and len(tail.content) == 100
    assert tail.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    bad = httpx.get(hub.url(TINY, "model.bin"), headers={"Range": f"bytes={size}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{size}"


def test_cut_next_truncates_once_and_range_resumes(hub):
    meta = hub.files[TINY]["model.bin"]
    url = hub.url(TINY, "model.bin")
    hub.cut_next("/model.bin", 1_000_000)
    got = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", url) as answer:
            assert int(answer.headers["content-length"]) == meta["size"]
            for chunk in answer.iter_bytes():
                got += chunk
    assert len(got) == 1_000_000
    with httpx.stream("GET", url, headers={"Range": f"bytes={len(got)}-"}) as answer:
        assert answer.status_code == 206
        for chunk in answer.iter_bytes():
            got += chunk
    assert len(got) == meta["size"] and hashlib.sha256(got).hexdigest() == meta["sha256"]
    assert hub.gets("/model.bin") == 2
    assert sum(n for p, n in hub.bytes_served.items() if p.endswith("/model.bin")) == meta["size"]
    assert [r for _, p, _, r in hub.requests if p.endswith("/model.bin")] == [None, "bytes=1000000-"]


def test_huggingface_hub_resumes_a_cut_download(hub, tmp_path):
    from huggingface_hub import constants

    name = f"{PIPER_DIR}/en_US-joe-medium.onnx"
    meta = hub.files[PIPER][name]
    # huggingface_hub writes what it reads in DOWNLOAD_CHUNK_SIZE pieces (10 MB): it resumes from the last
    # whole piece it wrote (a cut inside the first piece starts over without a Range)
    cut = 2 * constants.DOWNLOAD_CHUNK_SIZE + 12345
    assert cut < meta["size"]
    hub.cut_next("/en_US-joe-medium.onnx", cut)
    path = Path(hf_hub_download(PIPER, name, cache_dir=tmp_path, token=False))
    assert _sha256(path) == meta["sha256"]
    resumed = cut // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE
    gets = [(s, r) for m, p, s, r in hub.requests if m == "GET" and p.endswith("/en_US-joe-medium.onnx")]
    assert gets == [(200, None), (206, f"bytes={resumed}-")]
    assert sum(n for p, n in hub.bytes_served.items() if p.endswith(".onnx")) == cut + meta["size"] - resumed


def test_file_server_ranges_token_counts_and_cuts(file_server, monkeypatch):
    data = bytes(range(256)) * 4096  # 1 MiB
    url = file_server.put("weights/blob.bin", data)
    file_server.reset()
    whole = httpx.get(url)
    assert whole.status_code == 200 and whole.content == data
    etag = whole.headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"' and whole.headers["accept-ranges"] == "bytes"
    head = httpx.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(data) and head.content == b""
    for rng, start, end in (("bytes=100-", 100, len(data) - 1), ("bytes=5-9", 5, 9), ("bytes=-10", len(data) - 10,
                                                                                    len(data) - 1),
                            ("bytes=1000-99999999", 1000, len(data) - 1)):
        part = httpx.get(url, headers={"Range": rng})
        assert part.status_code == 206 and part.content == data[start:end + 1], rng
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert int(part.headers["content-length"]) == end - start + 1
    for rng in (f"bytes={len(data)}-", "bytes=9-5", "bytes=abc", "bytes=-"):
        bad = httpx.get(url, headers={"Range": rng})
        assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}", rng
    stale = httpx.get(url, headers={"Range": "bytes=5-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data
    assert httpx.get(file_server.url_for("weights/missing.bin")).status_code == 404
    assert file_server.gets("/blob.bin") == 1 + 4 + 4 + 1

    file_server.cut_next("blob.bin", 1000)
    got = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("GET", url) as answer:
            for chunk in answer.iter_bytes():
                got += chunk
    assert len(got) == 1000
    rest = httpx.get(url, headers={"Range": f"bytes={len(got)}-", "If-Range": etag})
    assert rest.status_code == 206 and bytes(got) + rest.content == data

    monkeypatch.setattr(file_server, "token", "s3cret")
    denied = httpx.get(url)
    assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Bearer s3cret"}).content == data
    file_server.reset()
    assert file_server.counts == {} and file_server.requests == []
