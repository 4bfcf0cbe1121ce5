"""A model's source made local: ``hf``, ``url`` and ``oci`` sources fetched into the cache, ``path`` checked.

``fetch`` returns where the backend finds the weights, a directory of the cache (or the one file of a URL that
is no archive); ``local_spec`` hands a backend a spec whose source is that path, so backends only ever know
``package`` and ``path``. A model of the cache is fetched under a lock: a second process (or pod) pulling the
same model waits, then uses it. Offline (``HARMONY_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``, or ``offline=True``)
nothing touches the network: a model the cache holds is used, else the error names the files that are missing.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from services.core.contracts.specs import HubSource, ModelSource, NamedModel
from services.core.contracts.wire import WeightsProgress
from services.core.runtime.weights import WeightsError, sha256_of
from services.weights import archives, hub
from services.weights.cache import CachedFile, ModelCache, ModelManifest, short_hash, slug
from services.weights.download import ChecksumMismatch, Expected, fetch_blob
from services.weights.labels import describe, redact
from services.weights.remotes import url_remote

Listener = Callable[[WeightsProgress], None]


class OfflineMissing(WeightsError):
    default_code = "weights_not_cached"


def offline_mode() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HARMONY_OFFLINE", "HF_HUB_OFFLINE"))


class Tracker:
    """The progress of one fetch, as WeightsProgress, handed to a listener at every change."""

    def __init__(self, source: ModelSource, listener: Listener | None) -> None:
        self.state = WeightsProgress(source=describe(source))
        self.listener = listener

    def update(self, **fields) -> None:
        self.state = self.state.model_copy(update=fields)
        if self.listener:
            self.listener(self.state)

    def add_bytes(self, count: int) -> None:
        self.update(bytesDone=max(0, self.state.bytesDone + count))


def fetch(source: ModelSource, *, cache: ModelCache | None = None, offline: bool | None = None,
          listener: Listener | None = None) -> Path:
    """Where the weights of ``source`` are on this machine (fetched into the cache if need be)."""
    cache = cache or ModelCache.default()
    offline = offline_mode() if offline is None else offline
    tracker = Tracker(source, listener)
    try:
        if source.hf:
            path = _fetch_hub(source, source.hf, cache, offline, tracker)
        elif source.url:
            path = _fetch_url(source, source.url, cache, offline, tracker)
        elif source.oci:
            path = _fetch_oci(source, source.oci, cache, offline, tracker)
        elif source.path:
            path = Path(source.path).expanduser()
            if not path.exists():
                raise WeightsError(f"source.path {path} does not exist")
            _check_main_sha256(path, source.sha256)
        else:
            raise WeightsError("a package source is found by its backend, not fetched")
    except WeightsError as exc:
        tracker.update(phase="failed", message=str(exc))
        raise
    tracker.update(phase="ready", path=str(path), message="")
    return path


def local_spec(spec: NamedModel, path: Path) -> NamedModel:
    """``spec`` with its weights at ``path`` (what a backend loads from)."""
    return spec.model_copy(update={"source": ModelSource(path=str(path))})


# Hugging Face

def _fetch_hub(source: ModelSource, repo: HubSource, cache: ModelCache, offline: bool, tracker: Tracker) -> Path:
    selection = f"-{short_hash(*repo.files)}" if repo.files else ""
    if offline:
        commit = repo.revision if hub.COMMIT.match(repo.revision) else cache.read_ref(repo.repo, repo.revision)
        if commit is None:
            raise OfflineMissing(f"offline: {hub.label(repo)} is not in the cache {cache.root}: its revision was "
                                 f"never resolved here (run `harmony pull` where the Hub is reachable)")
        found = cache.find("hf", repo.repo, commit + selection)
        if found is None:
            raise _missing(cache, "hf", repo.repo, commit + selection, hub.label(repo, commit))
        tracker.update(revision=commit)
        return cache.model_dir("hf", repo.repo, commit + selection)
    tracker.update(phase="resolving")
    commit = hub.resolve_commit(repo)
    cache.write_ref(repo.repo, repo.revision, commit)
    if found := cache.find("hf", repo.repo, commit + selection):  # a warm start asks the Hub one question
        tracker.update(revision=commit, bytesDone=found.size, bytesTotal=found.size, filesDone=len(found.files),
                       filesTotal=len(found.files))
        return cache.model_dir("hf", repo.repo, commit + selection)
    resolved = hub.resolve(repo, commit)
    version = resolved.commit + selection
    total = sum(f.size for f in resolved.files)
    tracker.update(revision=resolved.commit, bytesTotal=total, filesTotal=len(resolved.files))
    main = max(resolved.files, key=lambda f: f.size)
    if source.sha256 and main.sha256 and main.sha256 != source.sha256:
        raise ChecksumMismatch(f"{hub.label(repo, resolved.commit)}/{main.path} has SHA-256 {main.sha256}, "
                               f"but source.sha256 is {source.sha256}")
    cache.write_plan("hf", repo.repo, version, {"source": hub.label(repo, resolved.commit), "files": [
        {"path": f.path, "size": f.size, "sha256": f.sha256, "blob_id": f.blob_id} for f in resolved.files]})
    with cache.locked(f"model-hf-{slug(repo.repo)}-{version}"):
        if cache.find("hf", repo.repo, version):  # another process fetched it while this one waited
            tracker.update(bytesDone=total, filesDone=len(resolved.files))
            return cache.model_dir("hf", repo.repo, version)
        tracker.update(phase="downloading")
        files = []
        # small files first: configs are there early, and a stop mid-way leaves only the weights to fetch
        for number, item in enumerate(sorted(resolved.files, key=lambda f: f.size), 1):
            tracker.update(message=item.path)
            expected = Expected(item.size, item.sha256, None if item.sha256 else item.blob_id)
            key = f"hf-{item.sha256 or item.blob_id or short_hash(repo.repo, resolved.commit, item.path)}"
            digest = fetch_blob(cache, key, hub.remote(repo.repo, resolved.commit, item), expected,
                                tracker.add_bytes)
            files.append(CachedFile(path=item.path, size=item.size, sha256=digest))
            tracker.update(filesDone=number)
        files.sort(key=lambda f: f.path)
        tracker.update(phase="verifying", message="")
        _check_manifest_sha256(files, source.sha256, hub.label(repo, resolved.commit))
        manifest = ModelManifest(source=hub.label(repo, resolved.commit), kind="hf", revision=resolved.commit,
                                 files=files)
        return cache.build("hf", repo.repo, version, manifest)


def _missing(cache: ModelCache, kind: str, name: str, version: str, label: str) -> OfflineMissing:
    plan = cache.read_plan(kind, name, version)
    if not plan:
        return OfflineMissing(f"offline: {label} is not in the cache {cache.root} (run `harmony pull` where its "
                              "source is reachable)")
    missing = [f for f in plan["files"] if not ((f.get("sha256") and cache.has_blob(f["sha256"]))
                                                or (f.get("blob_id") and cache.known_sha256(f"hf-{f['blob_id']}")))]
    names = ", ".join(f"{f['path']} ({f['size']:,} bytes)" for f in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    return OfflineMissing(f"offline: {label} is incomplete in the cache {cache.root}: {len(missing)} of "
                          f"{len(plan['files'])} files missing: {names}{more}")


# URLs

def _fetch_url(source: ModelSource, url: str, cache: ModelCache, offline: bool, tracker: Tracker) -> Path:
    label = redact(url)
    version = short_hash(label, source.sha256 or "")
    found = cache.find("url", _url_name(url), version)
    if found is not None:
        tracker.update(bytesDone=found.size, bytesTotal=found.size, filesDone=len(found.files),
                       filesTotal=len(found.files))
        return _entry(cache.model_dir("url", _url_name(url), version), found)
    if offline:
        raise OfflineMissing(f"offline: {label} is not in the cache {cache.root} (run `harmony pull` where it is "
                             "reachable)")
    name = posixpath.basename(urlsplit(url).path) or "download"
    remote = url_remote(url)
    with cache.locked(f"model-url-{version}"):
        found = cache.find("url", _url_name(url), version)
        if found is not None:
            return _entry(cache.model_dir("url", _url_name(url), version), found)
        tracker.update(phase="downloading", message=name, filesTotal=1)
        stat = remote.stat()
        tracker.update(bytesTotal=stat.size)
        digest = fetch_blob(cache, f"url-{version}", remote,
                            Expected(stat.size, source.sha256, sha256_from_user=True), tracker.add_bytes, stat)
        tracker.update(phase="verifying", filesDone=1)
        blob = cache.blob(digest)
        if archives.is_archive(name):
            manifest = _unpacked(cache, blob, label, "url")
        else:
            manifest = ModelManifest(source=label, kind="url", main=name,
                                     files=[CachedFile(path=name, size=blob.stat().st_size, sha256=digest)])
        return _entry(cache.build("url", _url_name(url), version, manifest), manifest)


def _url_name(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or parts.netloc}{parts.path}"


def _entry(directory: Path, manifest: ModelManifest) -> Path:
    return directory / manifest.main if manifest.main else directory


def _unpacked(cache: ModelCache, archive: Path, label: str, kind: str) -> ModelManifest:
    """An archive's files, each hashed and kept as a blob of its own (deduplicated like any other file)."""
    staging = Path(tempfile.mkdtemp(dir=cache.root, prefix=".unpack-"))
    try:
        return _ingest(cache, staging, archives.unpack(archive, staging, label), label, kind)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _ingest(cache: ModelCache, folder: Path, names: list[str], label: str, kind: str,
            sha256: str | None = None) -> ModelManifest:
    """The files of ``folder`` kept as blobs, once the largest one is found to match ``sha256`` (when given)."""
    files = [CachedFile(path=name, size=(folder / name).stat().st_size, sha256=sha256_of(folder / name))
             for name in names]
    _check_manifest_sha256(files, sha256, label)
    for file in files:
        cache.add_blob(folder / file.path, file.sha256)
    return ModelManifest(source=label, kind=kind, files=files)


# OCI images outside Kubernetes

def _fetch_oci(source: ModelSource, reference: str, cache: ModelCache, offline: bool, tracker: Tracker) -> Path:
    version = short_hash(reference)
    found = cache.find("oci", reference, version)
    if found is not None:
        return cache.model_dir("oci", reference, version)
    if offline:
        raise OfflineMissing(f"offline: oci://{reference} is not in the cache {cache.root}")
    with cache.locked(f"model-oci-{version}"):
        if cache.find("oci", reference, version) is None:
            tracker.update(phase="downloading", message=reference)
            from services.weights import oci  # oras-py and requests: only for an oci source

            staging = Path(tempfile.mkdtemp(dir=cache.root, prefix=".oci-"))
            try:
                root, names = oci.pull(reference, staging, on_bytes=tracker.add_bytes,
                                       on_total=lambda size, count: tracker.update(bytesTotal=size, filesTotal=count))
                tracker.update(phase="verifying", filesDone=tracker.state.filesTotal)
                manifest = _ingest(cache, root, names, f"oci://{reference}", "oci", source.sha256)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            cache.build("oci", reference, version, manifest)
    return cache.model_dir("oci", reference, version)


# checksums of the main weight file

def _check_manifest_sha256(files: list[CachedFile], expected: str | None, label: str) -> None:
    if expected and files:
        main = max(files, key=lambda f: f.size)
        if main.sha256 != expected:
            raise ChecksumMismatch(f"{label}/{main.path} has SHA-256 {main.sha256}, but source.sha256 is {expected}")


def _check_main_sha256(path: Path, expected: str | None) -> None:
    if not expected:
        return
    main = path if path.is_file() else max((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size,
                                            default=None)
    if main is None:
        raise WeightsError(f"source.path {path} holds no files")
    actual = sha256_of(main)
    if actual != expected:
        raise ChecksumMismatch(f"{main} has SHA-256 {actual}, but source.sha256 is {expected}")
