"""Speaker statistics of the WORLD voice converter (``kind: world-v1``), computed from reference speech.

WORLD (pyworld) splits speech into F0, a smooth spectral envelope (CheapTrick) and aperiodicity (D4C).
A speaker is described by

* the mean and standard deviation of log F0 over voiced frames (the pitch the converter maps to), by
  the same F0 estimator the converter uses (DIO + StoneMask by default, or Harvest);
* the mean level-normalised log spectral envelope of voiced frames on a fixed mel-spaced grid
  (``ENVELOPE_MIN_HZ`` .. ``ENVELOPE_MAX_HZ``; the long-term timbre the converter equalises toward);
* a small codebook (k-means centroids) of those per-frame envelopes: the speaker's "vowel space".
  The converter estimates its vocal-tract-length warp as the frequency scaling that brings the source's
  frames nearest to this codebook; matching frames to the nearest centroid rather than long-term means
  keeps the estimate from depending on what the reference happens to say (a Japanese reference and an
  English sentence to convert share few phones but the same kinds of vowels).

References are analysed at 16 kHz whatever their rate (the grid stops below 8 kHz), so statistics of the
same voice agree across upload formats; everything here is plain JSON through ``model_dump``.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.core.audio import resample
from services.core.contracts.errors import InvalidRequest

KIND: Final = "world-v1"
ANALYSIS_RATE = 16000
FRAME_PERIOD_MS = 5.0
F0_FLOOR_HZ = 50.0
F0_CEIL_HZ = 800.0
ENVELOPE_BANDS = 36
ENVELOPE_MIN_HZ = 100.0
ENVELOPE_MAX_HZ = 7500.0
CODEBOOK_SIZE = 32
LOUD_FRAME_PERCENTILE = 20.0   # voiced frames quieter than this percentile are left out of envelope statistics

MIN_REFERENCE_SECONDS = 2.0    # a shorter reference is refused
MIN_VOICED_SECONDS = 1.5       # voiced speech (in runs of >= MIN_VOICED_RUN_MS) a reference must hold
MIN_VOICED_RUN_MS = 60.0       # noise gives sporadic short "voiced" runs; vowels last longer
MIN_VOICED_FRACTION = 0.3      # of the frames louder than the silence floor (noise: 3-15 %, speech: > 50 %)
MIN_LOG_F0_STD = 0.02          # a steady tone (hum, beep) has no intonation
SILENCE_DB = -50.0             # frames this far below the loudest are silence


def _mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def envelope_grid(bands: int = ENVELOPE_BANDS, low: float = ENVELOPE_MIN_HZ,
                  high: float = ENVELOPE_MAX_HZ) -> np.ndarray:
    """The mel-spaced frequencies (Hz) the envelope statistics are sampled at."""
    return _mel_to_hz(np.linspace(_mel(low), _mel(high), bands))


class SpeakerStats(BaseModel):
    """What the WORLD converter knows of a voice (JSON, stored in a speaker profile)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["world-v1"] = KIND
    sample_rate: int = Field(ANALYSIS_RATE, description="rate the reference was analysed at (Hz)")
    frame_period_ms: float = Field(FRAME_PERIOD_MS, gt=0)
    f0_method: Literal["harvest", "dio"] = Field("dio", description="WORLD F0 estimator the statistics used")
    frames: int = Field(..., ge=1, description="analysis frames in the reference")
    voiced_frames: int = Field(..., ge=1)
    voiced_fraction: float = Field(..., ge=0, le=1, description="voiced frames over non-silent frames")
    voiced_seconds: float = Field(..., ge=0)
    log_f0_mean: float = Field(..., description="mean of ln(F0 / Hz) over voiced frames")
    log_f0_std: float = Field(..., ge=0, description="standard deviation of ln(F0 / Hz) over voiced frames")
    envelope_min_hz: float = ENVELOPE_MIN_HZ
    envelope_max_hz: float = ENVELOPE_MAX_HZ
    envelope_mean: list[float] = Field(..., description="mean level-normalised ln spectral envelope of voiced "
                                                        "frames at envelope_grid() (mel-spaced)")
    envelope_codebook: list[list[float]] = Field(..., description="k-means centroids of the per-frame "
                                                                  "level-normalised ln envelopes, same grid")

    @model_validator(mode="after")
    def _shapes(self) -> SpeakerStats:
        bands = len(self.envelope_mean)
        if bands < 4:
            raise ValueError("envelope_mean needs at least 4 bands")
        if not self.envelope_codebook or any(len(row) != bands for row in self.envelope_codebook):
            raise ValueError("every envelope_codebook row must have as many bands as envelope_mean")
        if not self.envelope_min_hz < self.envelope_max_hz:
            raise ValueError("envelope_min_hz must be below envelope_max_hz")
        values = [self.log_f0_mean, self.log_f0_std, *self.envelope_mean,
                  *(v for row in self.envelope_codebook for v in row)]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("statistics must be finite numbers")
        return self

    @property
    def f0_mean_hz(self) -> float:
        return math.exp(self.log_f0_mean)

    def grid(self) -> np.ndarray:
        return envelope_grid(len(self.envelope_mean), self.envelope_min_hz, self.envelope_max_hz)


# ---------------------------------------------------------------------------------------------------------
# WORLD helpers shared with the converter

def world_f0(x: np.ndarray, fs: int, method: str = "dio", frame_period: float = FRAME_PERIOD_MS,
             floor: float = F0_FLOOR_HZ, ceil: float = F0_CEIL_HZ) -> tuple[np.ndarray, np.ndarray]:
    """(F0 per frame, 0 where unvoiced; frame times) of float64 audio."""
    import pyworld

    if method == "harvest":
        return pyworld.harvest(x, fs, f0_floor=floor, f0_ceil=ceil, frame_period=frame_period)
    if method == "dio":
        f0, times = pyworld.dio(x, fs, f0_floor=floor, f0_ceil=ceil, frame_period=frame_period)
        return pyworld.stonemask(x, f0, times, fs), times
    raise ValueError(f"unknown F0 method '{method}' (harvest or dio)")


def frame_features(log_sp: np.ndarray, fs: int, grid: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Level-normalised ln envelopes of ``log_sp`` (frames x FFT bins) at ``grid`` Hz, after scaling the
    frequency axis by ``alpha`` (formants move up by ``alpha``: the value at f is read at f / alpha)."""
    bins = log_sp.shape[1]
    position = np.clip(grid / alpha / (fs / 2.0) * (bins - 1), 0, bins - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    weight = position - low
    out = log_sp[:, low] * (1.0 - weight) + log_sp[:, high] * weight
    return out - out.mean(axis=1, keepdims=True)


def loud_voiced(f0: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Mask of the voiced frames loud enough to describe the voice's timbre."""
    voiced = f0 > 0
    if not voiced.any():
        return voiced
    energy = sp.sum(axis=1)
    floor = np.percentile(energy[voiced], LOUD_FRAME_PERCENTILE)
    return voiced & (energy >= floor)


def kmeans(points: np.ndarray, k: int, iterations: int = 25) -> np.ndarray:
    """Deterministic k-means: seeds at quantiles along the first principal axis, then Lloyd iterations."""
    k = min(k, len(points))
    centred = points - points.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    order = np.argsort(centred @ axis, kind="stable")
    centroids = points[order[np.linspace(0, len(points) - 1, k).astype(np.int64)]].copy()
    for _ in range(iterations):
        labels = nearest(points, centroids)[1]
        for j in range(k):
            members = points[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
    return centroids


def nearest(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(squared distance to the nearest centroid, its index) of every point."""
    d2 = (points ** 2).sum(axis=1)[:, None] - 2.0 * points @ centroids.T + (centroids ** 2).sum(axis=1)[None, :]
    index = d2.argmin(axis=1)
    return np.maximum(d2[np.arange(len(points)), index], 0.0), index


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[0::2]


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="reference", code="bad_reference")


# ---------------------------------------------------------------------------------------------------------

def analyze_speech(audio: np.ndarray, sample_rate: int, *, f0_method: str = "dio") -> SpeakerStats:
    """Speaker statistics of reference speech (mono float at ``sample_rate``).

    Raises ``InvalidRequest`` (code ``bad_reference``) for a reference too short, silent, or without
    enough voiced speech (noise, music without a voice, whispering) to describe a voice.
    """
    import pyworld

    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sample_rate < 8000:
        raise _bad(f"reference sample rate {sample_rate} Hz is too low (8000 Hz at least)")
    if not np.all(np.isfinite(x)):
        raise _bad("reference audio holds non-finite samples")
    seconds = len(x) / sample_rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise _bad(f"reference is {seconds:.1f} s long; at least {MIN_REFERENCE_SECONDS:.0f} s of speech is needed")
    if float(np.max(np.abs(x))) < 1e-4:
        raise _bad("reference is silent")
    fs = ANALYSIS_RATE
    x = resample(x, sample_rate, fs).astype(np.float64)
    f0, times = world_f0(x, fs, f0_method)
    sp = pyworld.cheaptrick(x, f0, times, fs)
    frame_s = FRAME_PERIOD_MS / 1000.0

    power_db = 10.0 * np.log10(sp.mean(axis=1) + 1e-20)
    active = power_db > power_db.max() + SILENCE_DB
    voiced = f0 > 0
    runs = _runs(voiced)
    speech_s = float(runs[runs * FRAME_PERIOD_MS >= MIN_VOICED_RUN_MS].sum()) * frame_s
    fraction = float(voiced.sum() / max(1, int((active | voiced).sum())))
    if speech_s < MIN_VOICED_SECONDS or fraction < MIN_VOICED_FRACTION:
        raise _bad(f"reference holds {speech_s:.1f} s of voiced speech ({fraction:.0%} of its sound); "
                   f"at least {MIN_VOICED_SECONDS:.1f} s of clear speech from one speaker is needed")

    log_f0 = np.log(f0[voiced])
    if float(log_f0.std()) < MIN_LOG_F0_STD:
        raise _bad("reference has a steady pitch (a tone or hum, not speech)")
    loud = loud_voiced(f0, sp)
    grid = envelope_grid()
    features = frame_features(np.log(sp[loud] + 1e-20), fs, grid)
    codebook = kmeans(features, CODEBOOK_SIZE)
    return SpeakerStats(
        sample_rate=fs,
        frame_period_ms=FRAME_PERIOD_MS,
        f0_method=f0_method,
        frames=len(f0),
        voiced_frames=int(voiced.sum()),
        voiced_fraction=round(fraction, 4),
        voiced_seconds=round(float(voiced.sum()) * frame_s, 3),
        log_f0_mean=float(log_f0.mean()),
        log_f0_std=float(log_f0.std()),
        envelope_mean=[round(float(v), 4) for v in features.mean(axis=0)],
        envelope_codebook=[[round(float(v), 4) for v in row] for row in codebook],
    )
