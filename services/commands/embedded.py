"""The embedded engine for a command run without a server: ``harmony serve``'s engine inside this process.

``serve()`` (the router and the model services) runs on its own event loop in a background thread. Its router
listens on a Unix socket in the engine's private directory (0700, removed at the end): only this user can reach
it, and no TCP port is opened. The command's SDK client talks to it over that socket (``connection.py``). No
signal handler is installed (a Ctrl-C is the main thread's ``KeyboardInterrupt``); the command stops the engine
through an event, in-flight requests drain, and the thread is joined, on every way out: a Ctrl-C at any moment (while
models load, mid-request, while the engine stops at the command's end) ends the command as interrupted (130) once
the engine has stopped, and a second one exits at once. The engine's logs go to
``<data_dir>/embedded.log``, its audit trail (when the config sends it to stdout) to
``<data_dir>/embedded-audit.jsonl``: the terminal keeps the progress bar, stdout the command's output. Its
state (files, batches, keys) is in the data dir of its config, as with ``harmony serve --config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from rich.console import Console

START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0
LOG_NAME = "embedded.log"
AUDIT_NAME = "embedded-audit.jsonl"
QUIET_CLIENT_LOGGERS = ("httpx", "httpcore", "openai")  # the command's own requests: not the engine's log

log = logging.getLogger("harmony.embedded")


class EngineFailed(Exception):
    """The embedded engine failed to start or stopped on its own; the message carries the end of its log."""


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class EngineThread(threading.Thread):
    """``serve(config)`` on an event loop of its own; ``url`` (``unix:/.../router.sock``) once it is ready."""

    def __init__(self, config) -> None:
        super().__init__(name="harmony-engine", daemon=True)
        self.config = config
        self.url: str | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        # set when ``run`` returns: what ``stop`` waits on, not ``join``, whose wait a Ctrl-C breaks for good (on
        # CPython 3.11, an interrupted join marks the thread as ended while it still runs: bpo-45274's handling)
        self.ended = threading.Event()
        self._stop_requested = False
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the command's thread
            log.exception("the embedded engine failed")
            self.error = exc
        finally:
            self.ended.set()

    async def _main(self) -> int:
        from services.serve import Hosting, serve

        self._stop_event = asyncio.Event()
        self._engine_loop = asyncio.get_running_loop()
        if self._stop_requested:  # stopped before it started
            self._stop_event.set()
        hosting = Hosting(stop=self._stop_event, router_on_unix_socket=True, on_ready=self._on_ready,
                          say=log.info, uvicorn_log_handlers=False)
        return await serve(self.config, "info", hosting=hosting)

    def _on_ready(self, url: str) -> None:
        self.url = url
        self.ready.set()

    def wait_ready(self, timeout: float, log_path: Path) -> str:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.1):
            if self.ended.is_set():
                raise EngineFailed(f"the embedded engine stopped while starting: {self.error}\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise EngineFailed(f"the embedded engine was not ready after {timeout:.0f} s:\n{_tail(log_path)}")
        assert self.url is not None
        return self.url

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Set the stop event (from this thread: thread-safely) and wait for the engine; False if it did not end."""
        self._stop_requested = True
        if self.ident is None:  # never started (``start`` is whole: ``ctrl_c_deferred``)
            return True
        loop, event = self._engine_loop, self._stop_event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(event.set)
        return self.ended.wait(timeout)


@contextlib.contextmanager
def engine_logs(path: Path) -> Iterator[None]:
    """Everything logged in this process (the engine's loggers, uvicorn's, warnings) goes to ``path`` while the
    engine runs, nothing to the terminal; the command's own HTTP client is kept at warnings."""
    root, handler = logging.getLogger(), logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    saved = root.level, root.handlers[:], {name: logging.getLogger(name).level for name in QUIET_CLIENT_LOGGERS}
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in QUIET_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
        handler.close()


def load_engine_config(config_path: str | None):
    """The config (``--config``, else ``harmony serve``'s default), checked; ``EngineFailed`` when it is bad. An
    audit trail to stdout goes to ``<data_dir>/embedded-audit.jsonl`` instead: stdout is the command's."""
    from services.core.contracts.specs import AuditSettings, ConfigError, load_config
    from services.serve import check_backends, default_config
    from services.store.paths import data_dir

    try:
        config = load_config(config_path) if config_path else default_config()
        check_backends(config)
    except ConfigError as exc:
        raise EngineFailed(str(exc)) from None
    if config.audit.sink == "stdout":
        config.audit = AuditSettings(sink="file", path=str(data_dir(config.data_dir) / AUDIT_NAME))
    return config


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """A Ctrl-C during the block is raised at its end, not inside it (on the main thread, where Python raises it)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # no Python handler to defer
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed and callable(previous):
        previous(signal.SIGINT, None)


def _join(engine: EngineThread, console: Console) -> bool:
    with console.status("stopping the embedded engine..."):
        return engine.stop()


def _stop(engine: EngineThread, console: Console, interrupted: bool) -> None:
    """Stop and join the engine. A Ctrl-C while it stops: the first (none ended the command) lets it stop, then ends
    the command as interrupted; a second exits at once (the kernel closes its sockets)."""
    try:
        stopped = _join(engine, console)
    except KeyboardInterrupt as pressed:
        if interrupted:
            _exit_now(engine, console)
        try:
            stopped = _join(engine, console)
        except KeyboardInterrupt:
            stopped = False
        if stopped:
            raise pressed
    if not stopped:
        _exit_now(engine, console)


def _exit_now(engine: EngineThread, console: Console) -> NoReturn:
    if engine.url:
        shutil.rmtree(os.path.dirname(engine.url.removeprefix("unix:")), ignore_errors=True)
    console.print("harmony: the embedded engine did not stop; exiting", highlight=False)
    logging.shutdown()
    os._exit(130)


@contextlib.contextmanager
def embedded_engine(config_path: str | None, console: Console | None = None,
                    timeout: float = START_TIMEOUT_S) -> Iterator[str]:
    """Run the engine of ``config_path`` (or the default config) in this process; yields its router's URL."""
    from services.store.paths import data_dir

    console = console or Console(stderr=True)
    config = load_engine_config(config_path)
    log_path = data_dir(config.data_dir) / LOG_NAME
    with engine_logs(log_path):
        log.info("starting the embedded engine for pid %d", os.getpid())
        engine, interrupted = EngineThread(config), False
        try:
            with ctrl_c_deferred():  # not inside Thread.start: a thread half started could be neither run nor joined
                engine.start()
            with console.status(f"starting the embedded engine (loading models; log: {log_path})..."):
                url = engine.wait_ready(timeout, log_path)
            console.print(f"embedded engine ready at {url}", highlight=False)
            yield url
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            _stop(engine, console, interrupted)
        if engine.error is not None:
            raise EngineFailed(f"the embedded engine failed: {engine.error}\n{_tail(log_path)}")
