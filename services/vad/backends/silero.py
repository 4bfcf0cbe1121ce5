"""Silero VAD (v6, ONNX) batched across requests, frame by frame.

The model is a small recurrent network: each call takes one 32-ms frame (512
samples at 16 kHz) of several streams at once (input ``[batch, 64 + 512]``: the
last 64 samples of the stream's previous frame, then the new frame), their
recurrent state ``[2, batch, 128]`` and the rate, and returns one speech
probability per stream and the new state.

``run_batch`` runs every item of a batch frame-synchronously: frame step ``t``
of all items still running goes through ONE session call, each row carrying its
own state and context. Items are ordered longest first, so the items still
running at a step are always a prefix of the rows and finished ones simply drop
out of the batch (no work is spent on padding). Per row this is exactly what
silero-vad's own ``OnnxWrapper`` does for a single stream (zero state and
context at the start, the last frame zero-padded to 512 samples), so the
probabilities equal the single-stream ones.

A live stream (the router's realtime sessions) sends its next whole frames with
the state its previous frames left (``VadContinuation``): its row starts from that
state and context instead of zeros, and the answer carries the state on, so the
service keeps nothing per stream and the probabilities equal one pass over the
whole stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.core.contracts.specs import NamedModel, Task
from services.core.runtime.cpus import threads_per_instance
from services.core.runtime.onnx_options import log_providers, providers, session_options
from services.core.runtime.weights import WeightsError, package_dir, shallowest
from services.core.tasks.jobs import VadContinuation, VadContinued

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("harmony.vad.silero")

SAMPLE_RATE = 16000
FRAME = 512      # samples per frame at 16 kHz (32 ms)
CONTEXT = 64     # samples of the previous frame the model sees before each frame
STATE = 128      # width of the recurrent state
STREAM_STATE = 2 * STATE + CONTEXT  # what a live stream carries from one call to the next
MODEL_FILE = "silero_vad.onnx"


def resolve_model_file(spec: NamedModel) -> Path:
    """The ONNX file: ``data/silero_vad.onnx`` of the pip package, or a local file, or a directory holding it
    at any depth (the snakers4/silero-vad repository: ``src/silero_vad/data/silero_vad.onnx``, older
    ``files/silero_vad.onnx``; the shallowest one wins). ``options.model_file`` names another file."""
    name = str(spec.options.get("model_file", MODEL_FILE))
    if spec.source.package:
        path = package_dir(spec.source.package.replace("-", "_")) / "data" / name
    else:
        path = Path(str(spec.source.path)).expanduser()
        if path.is_dir():
            found = shallowest(path, name)
            if found is None:
                others = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.onnx"))[:8]
                raise WeightsError(f"Silero VAD: no {name} under {path}"
                                   + (f" (it has {', '.join(others)}; set options.model_file)" if others else ""))
            path = found
    if not path.is_file():
        raise WeightsError(f"Silero VAD model file not found: {path}")
    return path


class SileroVadBackend:
    """Per-frame speech probabilities for whole utterances, many utterances per session call."""

    task = Task.vad
    devices = ("cpu", "cuda")
    sample_rate = SAMPLE_RATE
    frame_samples = FRAME
    streams = True  # also takes VadContinuation items: a live stream's next frames, from its carried state
    stream_state_size = STREAM_STATE

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.session: onnxruntime.InferenceSession | None = None  # set by load()
        self.path: Path | None = None
        self.load_seconds = 0.0
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def load(self) -> None:
        import onnxruntime as ort

        started = time.monotonic()
        self.path = resolve_model_file(self.spec)
        threads = threads_per_instance(self.spec.options, self.spec.batching.instances)
        options = session_options(self.spec, threads, inter_op_threads=1, shrinkable=False)
        self.session = session = ort.InferenceSession(str(self.path), sess_options=options,
                                                      providers=providers(self.spec))
        log_providers(self.spec, session)
        names = {i.name for i in session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise WeightsError(f"{self.path.name} is not a Silero VAD v5/v6 model (inputs: {sorted(names)})")
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s from %s (%d threads) in %.2fs", self.name, self.path, threads, self.load_seconds)

    def run_batch(self, items: Sequence[np.ndarray | VadContinuation]) -> list[np.ndarray | VadContinued]:
        """Mono float32 16-kHz audio per item -> its speech probability per 32-ms frame (float32). A
        ``VadContinuation`` (a live stream's next whole frames) starts from the state it carries and is answered
        with its probabilities and the state to carry on from (``STREAM_STATE`` floats: recurrent state, context)."""
        if self.session is None:
            raise RuntimeError(f"{self.name} is not loaded")
        streams = [item if isinstance(item, VadContinuation) else None for item in items]
        frames = [_frames(item.audio if isinstance(item, VadContinuation) else item) for item in items]
        order = sorted(range(len(frames)), key=lambda i: -len(frames[i]))  # longest first
        counts = [len(frames[i]) for i in order]
        steps = counts[0] if counts else 0
        probs = np.zeros((len(order), steps), dtype=np.float32)
        rows = len(order)
        x = np.zeros((rows, CONTEXT + FRAME), dtype=np.float32)
        state = np.zeros((2, rows, STATE), dtype=np.float32)
        for r, stream in enumerate(streams[i] for i in order):
            if stream is not None and stream.state is not None:
                state[:, r], x[r, FRAME:] = _unpack(stream.state)
        ends: dict[int, np.ndarray] = {}  # a stream's state when its last frame is done
        for t in range(steps):
            active = rows
            while counts[active - 1] <= t:  # finished items leave the batch (they are the last rows)
                active -= 1
            if active < rows:
                rows = active
                x = np.ascontiguousarray(x[:rows])
                state = np.ascontiguousarray(state[:, :rows])
            x[:, :CONTEXT] = x[:, FRAME:]  # context: the last 64 samples of the row's previous input
            for r in range(rows):
                x[r, CONTEXT:] = frames[order[r]][t]
            out, state = self.session.run(None, {"input": x, "state": state, "sr": self._sr})
            probs[:rows, t] = out[:, 0]
            for r in range(rows):
                if counts[r] == t + 1 and streams[order[r]] is not None:
                    ends[order[r]] = _pack(state[:, r], x[r, FRAME:])
        results: list[np.ndarray | VadContinued] = [np.zeros(0, dtype=np.float32)] * len(frames)
        for r, i in enumerate(order):
            row = probs[r, :counts[r]].copy()
            stream = streams[i]
            if stream is None:
                results[i] = row
            else:
                start = stream.state if stream.state is not None else np.zeros(STREAM_STATE, np.float32)
                results[i] = VadContinued(row, ends.get(i, start))
        return results


def _pack(state: np.ndarray, context: np.ndarray) -> np.ndarray:
    return np.concatenate([state.reshape(-1), context.reshape(-1)]).astype(np.float32)


def _unpack(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stream's carried state -> (recurrent state ``[2, 128]``, context ``[64]``); ValueError when malformed."""
    packed = np.asarray(packed, dtype=np.float32).reshape(-1)
    if packed.size != STREAM_STATE or not np.all(np.isfinite(packed)):
        raise ValueError(f"a Silero stream state is {STREAM_STATE} finite numbers")
    return packed[:2 * STATE].reshape(2, STATE), packed[2 * STATE:]


def _frames(audio: np.ndarray) -> np.ndarray:
    """``[n_frames, 512]``, the last frame zero-padded (as silero-vad pads it)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = -(-len(audio) // FRAME)
    if len(audio) == n * FRAME:
        return audio.reshape(n, FRAME)
    padded = np.zeros(n * FRAME, dtype=np.float32)
    padded[:len(audio)] = audio
    return padded.reshape(n, FRAME)
