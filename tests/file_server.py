"""A local HTTP file server for download tests (https:// weights sources, resumed downloads).

``FileServer(root)`` serves the files under ``root`` at ``server.url + "/" + relative path`` from a
``ThreadingHTTPServer`` in a thread: GET and HEAD, ``Range: bytes=N-``, ``bytes=N-M`` and ``bytes=-K``
(206 with ``Content-Range``; 416 with ``Content-Range: bytes */SIZE`` when unsatisfiable or malformed),
``Accept-Ranges: bytes``, ``Content-Length``, a strong ``ETag`` (the file's SHA-256, quoted) and
``Last-Modified``; ``If-Range`` with a different ETag answers the whole file (200), as RFC 9110 says.

* ``server.token = "..."``: every request must carry ``Authorization: Bearer <token>`` (else 401 with
  ``WWW-Authenticate: Bearer``); ``None`` (the default) requires nothing.
* ``server.counts`` / ``server.bytes_served``: GET requests and body bytes per URL path;
  ``server.requests``: (method, path, status, Range header) of every request; ``server.gets(suffix)``.
* ``server.cut_next(path_suffix, after_bytes)``: the next GET whose path ends with the suffix sends its
  headers (the full Content-Length) and ``after_bytes`` bytes of body, then closes the connection.
* ``server.drip_next(path_suffix, after_bytes)``: the next such GET sends ``after_bytes`` bytes of body, then one
  byte every 50 ms until the client leaves or the server stops (a download under way that is never done).
* ``server.reset()``: zero the counts and the log, drop pending cuts (the token stays).
* ``server.put(relpath, data)``: write a file under the root; returns its URL.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import os
import re
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def byte_range(header: str, total: int) -> tuple[int, int] | bool:
    """``(start, end)`` inclusive of a satisfiable ``Range`` header (``bytes=N-``, ``N-M``, ``-K``); False if not."""
    m = _RANGE.match(header.strip())
    if m is None or m.group(1) == m.group(2) == "":
        return False
    first, last = m.groups()
    if first == "":
        start, end = max(total - int(last), 0), total - 1
    else:
        start, end = int(first), min(int(last) if last else total - 1, total - 1)
    if start >= total or start > end:
        return False
    return start, end


def send_span(handler, file: Path, start: int, limit: int) -> int:
    """Send ``limit`` bytes of ``file`` from ``start`` through ``handler._write``; the bytes sent (fewer when the
    client went away)."""
    sent = 0
    with open(file, "rb") as handle, contextlib.suppress(OSError):
        handle.seek(start)
        while sent < limit:
            chunk = handle.read(min(1 << 20, limit - sent))
            if not chunk:
                break
            handler._write(chunk)
            sent += len(chunk)
        handler.wfile.flush()
    return sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FileServer

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def _handle(self):
        # logged and counted before the answer goes out (status with the headers, bytes before each write):
        # whatever a client has received is already in the counts
        self._path = path = urllib.parse.unquote(self.path.split("?", 1)[0])
        rng = self.headers.get("Range")
        self._entry = [self.command, path, 0, rng]
        owner = self.owner
        with owner._lock:
            owner._requests.append(self._entry)
            if self.command == "GET":
                owner._counts[path] = owner._counts.get(path, 0) + 1
                owner._bytes.setdefault(path, 0)
        self._answer(path, rng)

    def send_response(self, code, message=None):
        self._entry[2] = code
        super().send_response(code, message)

    def _write(self, data: bytes) -> None:
        if self.command == "GET":
            with self.owner._lock:
                self.owner._bytes[self._path] = self.owner._bytes.get(self._path, 0) + len(data)
        self.wfile.write(data)

    def _simple(self, status: int, message: str, headers: dict | None = None) -> tuple[int, int]:
        body = message.encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._write(body)
        return status, 0

    def _answer(self, path: str, rng: str | None) -> tuple[int, int]:
        owner = self.owner
        token = owner.token
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            return self._simple(401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="files"'})
        file = (owner.root / path.lstrip("/")).resolve()
        if owner.root not in file.parents or not file.is_file():
            return self._simple(404, "not found")
        st = file.stat()
        total = st.st_size
        etag = '"' + owner._etag(file, st) + '"'
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Type": "application/octet-stream",
                   "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
        start, end, status = 0, total - 1, 200
        if_range = self.headers.get("If-Range")
        if rng is not None and (if_range is None or if_range.strip() == etag):
            span = byte_range(rng, total)
            if span is False:
                return self._simple(416, "range not satisfiable", {"Content-Range": f"bytes */{total}"})
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            status = 206
        length = end - start + 1 if total else 0
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return status, 0
        cut, drip = owner._take(owner._cuts, path), owner._take(owner._drips, path)
        limit = min([length, *(n for n in (cut, drip) if n is not None)])
        sent = send_span(self, file, start, limit)
        if drip is not None:
            sent += self._drip(file, start + sent, length - sent)
        if cut is not None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        return status, sent

    def _drip(self, file: Path, start: int, limit: int) -> int:
        sent = 0
        with open(file, "rb") as handle, contextlib.suppress(OSError):
            handle.seek(start)
            while sent < limit and not self.owner._closing.wait(0.05):
                self._write(handle.read(1))
                self.wfile.flush()
                sent += 1
        return sent


class FileServer:
    def __init__(self, root: Path, token: str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._bytes: dict[str, int] = {}
        self._requests: list[list] = []  # [method, path, status, Range]
        self._cuts: list[tuple[str, int]] = []
        self._drips: list[tuple[str, int]] = []
        self._closing = threading.Event()  # set by ``stop``: drips end
        self._etags: dict[tuple, str] = {}
        handler = type("FileHandler", (_Handler,), {"owner": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="file-server", daemon=True)

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _etag(self, file: Path, st: os.stat_result) -> str:
        key = (str(file), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            cached = self._etags.get(key)
        if cached is None:
            digest = hashlib.sha256()
            with open(file, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            cached = digest.hexdigest()
            with self._lock:
                self._etags[key] = cached
        return cached

    def _take(self, pending: list[tuple[str, int]], path: str) -> int | None:
        """The byte count of the first of ``pending`` (cuts or drips) for ``path``, taken off the list."""
        with self._lock:
            for i, (suffix, after) in enumerate(pending):
                if path.endswith(suffix):
                    del pending[i]
                    return after
        return None

    # -- what tests use

    def put(self, relpath: str, data: bytes) -> str:
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{self.url}/{relpath}"

    def url_for(self, relpath: str) -> str:
        return f"{self.url}/{relpath}"

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def bytes_served(self) -> dict[str, int]:
        with self._lock:
            return dict(self._bytes)

    @property
    def requests(self) -> list[tuple[str, str, int, str | None]]:
        with self._lock:
            return [tuple(entry) for entry in self._requests]

    def gets(self, path_suffix: str) -> int:
        with self._lock:
            return sum(n for p, n in self._counts.items() if p.endswith(path_suffix))

    def cut_next(self, path_suffix: str, after_bytes: int) -> None:
        with self._lock:
            self._cuts.append((path_suffix, after_bytes))

    def drip_next(self, path_suffix: str, after_bytes: int) -> None:
        with self._lock:
            self._drips.append((path_suffix, after_bytes))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._bytes.clear()
            self._requests.clear()
            self._cuts.clear()
            self._drips.clear()
