"""Memory that work freed goes back to the operating system: glibc's malloc arenas trimmed.

Measured (bench/memory.py, docs/architecture.md "Memory"): what the inference libraries free
(CTranslate2, torch, numpy, ONNX Runtime's shrunk arenas) stays in glibc's heaps. glibc raises
its mmap threshold each time a large block is freed (up to 32 MiB), so later large tensors come
from the heap of the worker thread's malloc arena, one arena per thread that ever allocated, and
free memory in the middle of a heap goes back to the OS only through ``malloc_trim``. So a
process serving models runs ``MemoryTrimmer``: a daemon thread that calls ``malloc_trim(0)``
every ``interval_s`` seconds, returning the free pages of every arena. (A fixed, low mmap
threshold gives memory back too, but maps and faults in every large tensor of every run:
Piper took 1.8x as long.)

``HARMONY_RELEASE_MEMORY=0`` turns it off (and ONNX Runtime's arenas are no longer shrunk, see
``services/core/runtime/onnx_options.py``): the behaviour before, for comparison. Elsewhere than on
glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

log = logging.getLogger("harmony.memory")

ENV = "HARMONY_RELEASE_MEMORY"
TRIM_INTERVAL_S = 1.0


def enabled() -> bool:
    """Whether memory is given back (``HARMONY_RELEASE_MEMORY``, default on)."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def trim() -> bool:
    """Return the free pages of every malloc arena to the OS; True when some were."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class MemoryTrimmer:
    """A daemon thread trimming malloc's arenas every ``interval_s`` seconds until ``stop()``."""

    def __init__(self, interval_s: float = TRIM_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemoryTrimmer:
        if _glibc() is None or not enabled() or self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._loop, name="harmony-malloc-trim", daemon=True)
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            trim()


def release_memory_at_start() -> MemoryTrimmer:
    """What a serving process calls once, before loading models: the trimmer, started."""
    trimmer = MemoryTrimmer().start()
    log.debug("memory release: trimmer %s", "running" if trimmer.running else "off")
    return trimmer
