"""What the speaker encoders (Resemblyzer, VoiceFilter-Lite) share: finding their weights file, and reading each
item of a batch as mono audio."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from services.core.contracts.errors import InvalidAudio
from services.core.contracts.specs import ModelSource
from services.core.runtime.weights import WeightsError, sha256_of, shallowest
from services.core.tasks.jobs import WindowsJob


def encoder_weights(source: ModelSource, weights_file: str, packaged: Callable[[], Path]) -> Path:
    """The weights file: ``source.path`` (a file, or a folder holding ``weights_file`` at any depth, as a
    repository's layout may nest it), else ``packaged()`` (inside the installed package); it must exist, and match
    ``source.sha256`` when the spec names one."""
    if source.path:
        path = Path(source.path).expanduser()
        if path.is_dir():
            found = shallowest(path, weights_file)
            if found is None:
                raise WeightsError(f"speaker encoder weights not found: no {weights_file} under {path}")
            path = found
    else:
        path = packaged()
    if not path.is_file():
        raise WeightsError(f"speaker encoder weights not found at {path}")
    if source.sha256 and sha256_of(path) != source.sha256:
        raise WeightsError(f"{path}: SHA-256 does not match the one the model spec names")
    return path


def item_audio(item: np.ndarray | WindowsJob) -> tuple[WindowsJob | None, np.ndarray | InvalidAudio]:
    """A batch item's job (None for a plain utterance) and its audio as float32, or the InvalidAudio that fails
    that item alone: audio that is not mono, or holds NaN or infinite samples."""
    job = item if isinstance(item, WindowsJob) else None
    wav = np.asarray(job.audio if job else item, dtype=np.float32)
    if wav.ndim != 1:
        return job, InvalidAudio(f"speaker encoder takes mono audio, got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
        return job, InvalidAudio("audio holds NaN or infinite samples")
    return job, wav
