"""Start ``harmony serve`` as a user would, in a subprocess, and stop it with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.core.http.service_url import unix_url
from tests.servers import free_port


def connections(process, kind: str) -> list:
    """A process's sockets of ``kind``: psutil 6's ``net_connections``, or 5.9's ``connections`` (olah, the test Hub
    mirror, installs fastapi-utils, which keeps psutil below 6)."""
    method = getattr(process, "net_connections", None) or process.connections
    return method(kind=kind)


class HarmonyProcess:
    def __init__(self, config: str | None = None, timeout: float = 180.0, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_file = Path(tempfile.mkdtemp()) / "ready"
        self.log = Path(tempfile.mkdtemp()) / "harmony.log"
        self.config = config
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.extra_args = extra_args or []
        self.env = env  # added to this process's environment

    def start(self) -> HarmonyProcess:
        args = [sys.executable, "-m", "services.cli", "serve", "--port", str(self.port),
                "--ready-file", str(self.ready_file), "--log-level", "warning"]
        if self.config:
            args += ["--config", self.config]
        args += self.extra_args
        self._log_handle = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log_handle, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + self.timeout
        while not self.ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"harmony serve did not become ready:\n{self.output()}")
            time.sleep(0.1)
        return self

    def service_url(self, name: str) -> str:
        """The ``unix:`` URL of one of the model services (``stt``, ``tts``, ``vad``, ``vc``), found among the
        process's own Unix sockets: the log does not print them."""
        return unix_url(next(path for path in self.unix_sockets() if os.path.basename(path) == f"{name}.sock"))

    def unix_sockets(self) -> set[str]:
        """The paths of the process's Unix sockets (the listening ones, and connections accepted on them)."""
        import psutil

        return {c.laddr for c in connections(psutil.Process(self.proc.pid), "unix") if c.laddr}

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log_handle.close()
