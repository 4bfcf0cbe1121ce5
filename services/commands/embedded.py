"""The embedded engine for a command run without a server: ``harmony serve`` as a child process.

It listens on a free loopback port (the kernel picks it: ``--port 0``) and says where once every model is
loaded (``--ready-file``); it runs in its own session, so a Ctrl-C at the terminal reaches only this command,
which then stops the engine itself (SIGTERM: in-flight requests drain) and waits for it, on every way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0


class EngineFailed(Exception):
    """The embedded engine exited or never became ready; the message carries the end of its log."""


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(process: subprocess.Popen, ready: Path, log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not (ready.exists() and ready.read_text().strip()):
        if process.poll() is not None:
            raise EngineFailed(f"the embedded engine exited with status {process.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise EngineFailed(f"the embedded engine was not ready after {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.1)
    return ready.read_text().strip()


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM and wait; killed when it does not stop in time or when the user presses Ctrl-C again."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.kill()
        process.wait()


@contextlib.contextmanager
def embedded_engine(config: str | None, console: Console | None = None,
                    timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Start ``harmony serve`` (``config``, or the default one) on a free loopback port; yields its URL."""
    console = console or Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="harmony-cli-"))
    ready, log = workdir / "ready", workdir / "engine.log"
    args = [sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1", "--port", "0",
            "--ready-file", str(ready), "--log-level", "warning"]
    if config:
        args += ["--config", config]
    process = None
    try:
        with open(log, "wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=os.environ.copy(), start_new_session=True)
        with console.status("starting the embedded engine (loading models)..."):
            url = _wait_ready(process, ready, log, timeout)
        console.print(f"embedded engine ready at {url}", highlight=False)
        yield url
    finally:
        if process is not None:
            with console.status("stopping the embedded engine..."):
                _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
