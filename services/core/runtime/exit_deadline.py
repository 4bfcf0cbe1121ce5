"""A process that was told to stop ends by a deadline, whatever is still running in it.

Python cannot stop a thread. At exit the interpreter joins every worker thread of a ``ThreadPoolExecutor``, and a
thread inside a model's forward pass (CTranslate2, ONNX Runtime) returns only when the pass is done: a batch of
Whisper's fallback ladder held ``harmony serve`` for over a minute after its last request had been answered. The
batchers give up abandoned work between steps (services/core/tasks/wanted.py), so this rarely waits; ``ExitDeadline`` is
the guarantee: a daemon timer that, once the deadline passes, says what was still running, flushes the logs and
ends the process with ``os._exit``. Only a program that owns its process may arm it (``harmony serve``, not the
engine embedded in another command).

Once serving has ended, the interpreter's own teardown (freeing every loaded model, collecting a heap of millions
of objects) held ``harmony serve`` 1.3-3 s after "Harmony stopped." on an idle machine, and up to the deadline after
a long run: time in which nothing is left to do, since the system frees the process's memory anyway.
``ExitWhenServed`` skips it, and only it: the threads are joined and the other atexit handlers run as before.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

log = logging.getLogger("harmony.serve")


class ExitDeadline:
    """``arm(seconds)``: the process exits (status ``code``) that long from now unless it has exited by then;
    ``now()``: at once, status 1 (a second Ctrl-C)."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self._timer: threading.Timer | None = None

    def arm(self, seconds: float) -> None:
        if self._timer is None:
            self._timer = threading.Timer(seconds, self._expire, args=(seconds,))
            self._timer.daemon = True
            self._timer.start()

    def now(self, code: int = 1) -> None:
        log.warning("stopping at once (asked twice)")
        _exit(code)

    def _expire(self, seconds: float) -> None:
        busy = [t.name for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
                and t is not threading.main_thread()]
        log.warning("still stopping %g s after the signal (threads still running: %s): exiting now", seconds,
                    ", ".join(busy) or "none")
        _exit(self.code)


class ExitWhenServed:
    """``arm()`` first thing, ``done(code)`` when serving has returned ``code``: at interpreter exit, after the
    non-daemon threads are joined and every atexit handler registered after ``arm()`` has run (they run last
    registered first), the logs are shut down (flushed, closed) and the process ends with ``code`` without the
    interpreter's teardown. If serving raised, ``done`` is never called and the process exits as any other."""

    def __init__(self) -> None:
        self.code: int | None = None

    def arm(self) -> ExitWhenServed:
        atexit.register(self._exit)
        return self

    def done(self, code: int) -> int:
        self.code = code
        return code

    def _exit(self) -> None:
        if self.code is not None:
            logging.shutdown()  # logging's own handler, registered before arm(), would run after this one
            _exit(self.code)


def _exit(code: int) -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - a handler that cannot flush must not keep the process alive
            pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(code)
