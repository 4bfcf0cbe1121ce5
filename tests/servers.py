"""Run real apps on loopback ports for tests: uvicorn in a background thread with its own event loop."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time

import httpx

from services.core.contracts.specs import ServerSettings
from services.core.http.server import build_server, tcp_socket


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``: its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def dead_url():
    """A loopback URL that refuses connections: its port stays bound (never listening) until the block ends,
    so no server started meanwhile can take it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class ServerThread:
    """``app`` served as ``harmony serve`` serves its router (``services/core/http_server``), with ``settings``."""

    def __init__(self, app, port: int | None = None, settings: ServerSettings | None = None) -> None:
        self.app = app
        self.sock = tcp_socket("127.0.0.1", port or 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = build_server(app, settings or ServerSettings(), "warning", handle_signals=False)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started or not self._models_settled():
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.05)
        return self

    def _models_settled(self) -> bool:
        """A model service loads its models once it serves: wait for them (loaded, or failed) as harmony serve does."""
        if not isinstance(getattr(self.app.state, "models", None), dict):
            return True
        from services.core.http.service_app import models_settled

        return models_settled(self.app)

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def wait_ready(url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never became ready")
