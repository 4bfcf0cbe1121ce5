"""Memory that work freed goes back to the operating system: glibc's malloc tuned and trimmed.

Measured (bench/memory.py, docs/architecture.md "Memory"): every new input shape made ONNX
Runtime's CPU arena grow to the largest tensors seen, and what the arena (or any other library)
freed stayed in glibc's heaps: glibc raises its mmap threshold each time a large block is freed,
so the next large tensors come from the heap of the worker thread's arena, and freed heap
memory in the middle of an arena is only returned by ``malloc_trim``. So a process serving
models:

- ``tune_allocator()`` once at start: a fixed mmap threshold (blocks of at least 1 MiB are their
  own mappings and are unmapped when freed) instead of glibc's sliding one;
- ``MemoryTrimmer``: a daemon thread that calls ``malloc_trim(0)`` every ``interval_s`` seconds
  (a few milliseconds each), returning the free pages of every arena.

``HARMONY_RELEASE_MEMORY=0`` turns both off (and lets ONNX Runtime keep its arena, see
``services/core/onnx_options.py``): the behaviour before, for comparison. Elsewhere than on
glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading

log = logging.getLogger("harmony.memory")

ENV = "HARMONY_RELEASE_MEMORY"
M_MMAP_THRESHOLD = -3          # mallopt parameter numbers of glibc's malloc.h
MMAP_THRESHOLD = 1 << 20       # 1 MiB: larger blocks are mapped on their own and unmapped when freed
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


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold; True when it was set (glibc, and release enabled)."""
    libc = _glibc()
    if libc is None or not enabled():
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)))


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

    def start(self) -> "MemoryTrimmer":
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
    """What a serving process calls once before loading models: the tuned allocator and the trimmer."""
    tuned = tune_allocator()
    trimmer = MemoryTrimmer().start()
    log.debug("memory release: allocator tuned %s, trimmer %s", tuned, trimmer.running)
    return trimmer
