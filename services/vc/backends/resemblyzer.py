"""Resemblyzer (GE2E, 256-d) speaker embeddings, batched across requests.

Resemblyzer's ``VoiceEncoder.embed_utterance`` embeds one utterance at a time: it cuts the mel
spectrogram (40 mels, 25 ms window, 10 ms hop at 16 kHz) into overlapping partial windows of
160 frames (1.6 s, 1.3 windows a second), runs the partials through the 3-layer LSTM as one
batch, averages the partial embeddings and L2-normalises the mean.

``run_batch`` does the same for every clip of a batch at once: the partial windows of ALL clips
are stacked into one tensor (they all have the same shape, 160 x 40, so nothing is padded) and
go through the network in one forward pass (several when there are more than ``max_partials``
of them); the partial embeddings are then split back per clip, averaged and renormalised.
The result equals ``embed_utterance`` of each clip (up to float rounding).

Input: mono float32 speech at 16 kHz that a VAD upstream has already cut to speech, so
Resemblyzer's own webrtcvad silence trimming is not applied; its volume normalisation
(raise to -30 dBFS, never lower) is, as ``preprocess_wav`` does.

Weights: ``pretrained.pt`` inside the ``resemblyzer`` package (source ``{package: resemblyzer}``),
or a checkpoint of the same shape at ``source.path`` (a file, or a folder holding pretrained.pt at any depth).

Options: ``cpu_threads`` (default: cores / batching.instances), ``max_partials`` (partial
windows per forward pass, default 256).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from services.core.contracts.errors import InvalidAudio
from services.core.contracts.specs import NamedModel, Task
from services.core.runtime.cpus import threads_per_instance
from services.core.runtime.weights import package_dir
from services.core.tasks.jobs import WindowEmbeddings, WindowsJob
from services.vc.backends.encoders import encoder_weights, item_audio

if TYPE_CHECKING:
    from resemblyzer.voice_encoder import VoiceEncoder

log = logging.getLogger("harmony.vc.resemblyzer")

SAMPLE_RATE = 16000
EMBEDDING_SIZE = 256
PARTIALS_PER_SECOND = 1.3   # embed_utterance's default rate
MIN_COVERAGE = 0.75         # ...and min_coverage: a last partial window less full than this is dropped
TARGET_DBFS = -30           # resemblyzer.hparams.audio_norm_target_dBFS
INT16_MAX = (2 ** 15) - 1
DEFAULT_MAX_PARTIALS = 256
WINDOW_SECONDS = 1.6        # a partial window: 160 mel frames of 10 ms
MAX_WINDOW_STEP_S = 1.6     # windows must cover the audio (compute_partial_slices: rate >= 0.625)
WEIGHTS_FILE = "pretrained.pt"


def _import_resemblyzer():
    # resemblyzer imports webrtcvad (pkg_resources) and scipy.ndimage.morphology: both warn on import
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import resemblyzer.audio as audio
        from resemblyzer.voice_encoder import VoiceEncoder
    return audio, VoiceEncoder


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def normalize_volume(wav: np.ndarray) -> np.ndarray:
    """Resemblyzer's ``normalize_volume(wav, -30, increase_only=True)``; silence stays silence (no NaN)."""
    rms = float(np.sqrt(np.mean((wav * INT16_MAX) ** 2))) if wav.size else 0.0
    if rms <= 0.0:
        return wav
    change_db = TARGET_DBFS - 20 * np.log10(rms / INT16_MAX)
    if change_db < 0:
        return wav
    return wav * (10 ** (change_db / 20))


class ResemblyzerEncoder:
    """The GE2E speaker encoder of Resemblyzer; the partial windows of a whole batch go through one pass."""

    task = Task.embed
    devices = ("cpu", "cuda")
    sample_rate = SAMPLE_RATE
    embedding_size = EMBEDDING_SIZE  # what the voice service checks a registered voice's embedding against
    window_seconds = WINDOW_SECONDS  # WindowsJob: each partial window's own embedding (diarization)

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.model: VoiceEncoder | None = None  # set by load()
        self.device = "cpu"
        self.max_partials = max(1, int(spec.options.get("max_partials", DEFAULT_MAX_PARTIALS)))
        self.load_seconds = 0.0
        self._audio: ModuleType | None = None  # resemblyzer.audio
        # VoiceEncoder.compute_partial_slices: (samples, rate, coverage) -> (wave slices, mel slices)
        self._slices: Callable[..., tuple[list[slice], list[slice]]] | None = None

    # lifecycle
    def _weights_path(self) -> Path:
        # pretrained.pt at any depth of a folder (the resemblyzer repository: resemblyzer/pretrained.pt)
        module = (self.spec.source.package or "resemblyzer").replace("-", "_")
        return encoder_weights(self.spec.source, WEIGHTS_FILE, lambda: package_dir(module) / WEIGHTS_FILE)

    def load(self) -> None:
        import torch

        started = time.monotonic()
        audio, VoiceEncoder = _import_resemblyzer()
        path = self._weights_path()
        device = _pick_device(self.spec.device)
        if device == "cpu":
            # each concurrently running batch gets an equal share of the cores (torch's pool is process-wide)
            threads = threads_per_instance(self.spec.options, self.spec.batching.instances)
            torch.set_num_threads(threads)
        model = VoiceEncoder(device=device, verbose=False, weights_fpath=path)
        model.eval()
        model.requires_grad_(False)
        self._audio = audio
        self._slices = VoiceEncoder.compute_partial_slices
        self.model = model
        self.device = device
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s from %s on %s in %.1fs", self.name, path, device, self.load_seconds)

    # inference
    def partials(self, wav: np.ndarray, rate: float = PARTIALS_PER_SECOND) -> np.ndarray:
        """The partial mel windows of one clip, exactly as ``embed_utterance`` cuts them (``rate`` windows a
        second): [n, 160, 40]."""
        return self._partials(wav, rate)[0]

    def _partials(self, wav: np.ndarray, rate: float) -> tuple[np.ndarray, list[slice]]:
        if self._slices is None or self._audio is None:
            raise RuntimeError(f"{self.name} is not loaded")
        wav = normalize_volume(wav)
        wav_slices, mel_slices = self._slices(len(wav), rate, MIN_COVERAGE)
        needed = wav_slices[-1].stop
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)), "constant")
        mel = self._audio.wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices]), wav_slices

    def _forward(self, mels: np.ndarray) -> np.ndarray:
        import torch

        model = self.model
        if model is None:
            raise RuntimeError(f"{self.name} is not loaded")
        out = []
        with torch.inference_mode():
            for start in range(0, len(mels), self.max_partials):
                chunk = torch.from_numpy(np.ascontiguousarray(mels[start:start + self.max_partials]))
                out.append(model(chunk.to(model.device)).float().cpu().numpy())
        return np.concatenate(out)

    def run_batch(self, items: Sequence[np.ndarray | WindowsJob]) -> list[np.ndarray | WindowEmbeddings]:
        """Each array's utterance embedding (its partials averaged), and each ``WindowsJob``'s windows embedded one
        by one; the partial windows of every item go through the network together."""
        if self.model is None:
            raise RuntimeError(f"{self.name} is not loaded")
        results: list = [None] * len(items)
        windows: list[np.ndarray] = []
        owners: list[tuple[int, int, list[slice] | None]] = []  # (item, partial count, window slices of a job)
        for index, item in enumerate(items):
            job, wav = item_audio(item)
            if isinstance(wav, InvalidAudio):
                results[index] = wav
                continue
            step = min(max(job.step_s, 0.05), MAX_WINDOW_STEP_S) if job else None
            parts, slices = self._partials(wav, 1.0 / step if step else PARTIALS_PER_SECOND)
            windows.append(parts)
            owners.append((index, len(parts), slices if job else None))
        if windows:
            embeds = self._forward(np.concatenate(windows))
            start = 0
            for index, count, cuts in owners:
                mine = embeds[start:start + count]
                start += count
                results[index] = _utterance(mine) if cuts is None else _windows(mine, cuts, self.sample_rate)
        return results


def _utterance(partials: np.ndarray) -> np.ndarray:
    mean = partials.mean(axis=0)
    return (mean / np.linalg.norm(mean, 2)).astype(np.float32)


def _windows(partials: np.ndarray, slices: list[slice], rate: int) -> WindowEmbeddings:
    norms = np.linalg.norm(partials, axis=1, keepdims=True)
    return WindowEmbeddings(starts=np.array([s.start / rate for s in slices]),
                            ends=np.array([s.stop / rate for s in slices]),
                            embeddings=(partials / np.maximum(norms, 1e-12)).astype(np.float32))
