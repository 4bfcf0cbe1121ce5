"""Voice conversion on the WORLD vocoder (pyworld): no weights, a few statistics of the target voice.

For each job the source is analysed with WORLD (F0 by DIO + StoneMask, or Harvest; CheapTrick spectral
envelope; D4C aperiodicity) and resynthesised with

1. F0 mapped in the log domain to the target's mean and spread:
   ln f0' = mu_t + r * (ln f0 - mu_s), r = sigma_t / sigma_s (clamped to 0.5 .. 2, times ``f0_range``),
   mu_s and sigma_s taken from the utterance itself;
2. the spectral envelope warped along frequency, vocal-tract-length style: the value at f is read at
   f / alpha, so every formant moves by alpha. alpha is the scaling, searched on a log grid inside
   ``warp_min`` .. ``warp_max`` (parabolic refinement), that brings the source's loud voiced frames
   nearest to the target's envelope codebook (``services.vc.stats``), with a weak prior toward
   (target F0 / source F0) ** 0.5 that decides where the envelope evidence is flat; raised to
   ``warp_strength``;
3. the long-term envelope corrected toward the target: ``envelope_strength`` times the (smoothed)
   difference between the target's mean envelope and the warped source's;
4. each voiced frame pulled toward its nearest target codebook entry by ``codebook_strength`` (a mild,
   frame-wise timbre correction: 1.0 would replace the source's vowel colour by the target's nearest one);
   the corrections of 3 and 4 are each clamped to +-``envelope_max_db``;
5. the aperiodicity kept as analysed; WORLD synthesis at the job's own rate; the loudness (RMS) matched
   to the source and the length kept to the sample.

WORLD is C code that works on one utterance at a time, so ``run_batch`` loops over its jobs: a batch is
no faster than its jobs one after another. The converter works at the input's rate (no resampling):
with DIO + StoneMask the whole conversion costs about 0.05 s per second of audio on one core, Harvest
about 0.17 s (Harvest's cost does not drop at a lower rate). Measured with ``bench/clone_quality.py`` on
seven targets, Harvest gave the same similarity and word error rate, so ``dio`` is the default;
statistics made by ``analyze`` use the converter's own F0 method, so the two pitch means agree.

Options (``spec.options``), defaults chosen with ``bench/clone_quality.py``: ``f0_method`` (harvest | dio),
``frame_period_ms``, ``warp_strength``, ``warp_min``, ``warp_max``, ``warp_prior``, ``warp_prior_exponent``,
``envelope_strength``, ``codebook_strength``, ``envelope_max_db``, ``f0_range``.
A neural converter later implements the same protocol (``services.core.tasks.protocols.VoiceConverter``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import NamedModel, Task
from services.core.tasks.jobs import ConversionJob
from services.vc.stats import (
    F0_CEIL_HZ,
    F0_FLOOR_HZ,
    SpeakerStats,
    analyze_speech,
    frame_features,
    loud_voiced,
    nearest,
    world_f0,
)

log = logging.getLogger("harmony.vc.world")

DEFAULTS: dict[str, Any] = {
    "f0_method": "dio",
    "frame_period_ms": 5.0,
    "warp_strength": 1.0,
    "warp_min": 0.75,
    "warp_max": 1.45,
    "warp_prior": 3.0,
    "warp_prior_exponent": 0.5,
    "envelope_strength": 1.0,
    "codebook_strength": 0.5,
    "envelope_max_db": 9.0,
    "f0_range": 1.0,
}
WARP_STEPS = 48                  # log-spaced candidates between warp_min and warp_max
MIN_SOURCE_SECONDS = 0.05        # shorter (or silent) audio is returned unchanged
MIN_SOURCE_FRAMES = 10           # loud voiced frames needed to estimate a warp or a correction
MIN_F0_FRAMES = 20               # voiced frames needed to trust the source's F0 spread (else ratio 1)


@dataclass
class Conversion:
    """One converted utterance and what was done to it."""

    audio: np.ndarray
    warp: float            # formant scaling applied (1.0: none)
    f0_ratio: float        # exp(mu_t - mu_s): the mean pitch change (1.0 when nothing was voiced)
    voiced_fraction: float


def _option(spec: NamedModel, key: str):
    value = spec.options.get(key, DEFAULTS[key])
    kind = type(DEFAULTS[key])
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise ValueError(f"{spec.name}: option {key} must be a {kind.__name__}, not {value!r}")
    return value


def _interpolate_rows(values: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Linear interpolation of every row of ``values`` at fractional column ``position``."""
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, values.shape[1] - 1)
    weight = position - low
    return values[:, low] * (1.0 - weight) + values[:, high] * weight


class WorldConverter:
    """Statistics-based voice conversion with the WORLD vocoder (the ``world`` vc backend)."""

    task = Task.vc
    devices = ("cpu",)

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.f0_method = _option(spec, "f0_method")
        if self.f0_method not in ("harvest", "dio"):
            raise ValueError(f"{spec.name}: option f0_method must be harvest or dio, not '{self.f0_method}'")
        self.frame_period = _option(spec, "frame_period_ms")
        if not 1.0 <= self.frame_period <= 20.0:
            raise ValueError(f"{spec.name}: option frame_period_ms must be within 1 .. 20")
        self.warp_strength = _option(spec, "warp_strength")
        self.warp_min = _option(spec, "warp_min")
        self.warp_max = _option(spec, "warp_max")
        if not 0.5 <= self.warp_min <= 1.0 <= self.warp_max <= 2.0:
            raise ValueError(f"{spec.name}: options need 0.5 <= warp_min <= 1 <= warp_max <= 2")
        self.warp_prior = _option(spec, "warp_prior")
        self.warp_prior_exponent = _option(spec, "warp_prior_exponent")
        self.envelope_strength = _option(spec, "envelope_strength")
        self.codebook_strength = _option(spec, "codebook_strength")
        self.envelope_limit = _option(spec, "envelope_max_db") / 10.0 * math.log(10.0)  # dB -> ln of power
        self.f0_range = _option(spec, "f0_range")
        self.warps = np.exp(np.linspace(math.log(self.warp_min), math.log(self.warp_max), WARP_STEPS))

    def load(self) -> None:
        import pyworld  # noqa: F401  (fail at startup, not at the first request, when it is missing)

    def analyze(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Speaker statistics of reference speech as JSON data; refuses unusable references (bad_reference)."""
        return analyze_speech(audio, sample_rate, f0_method=self.f0_method).model_dump()

    def run_batch(self, jobs: Sequence[ConversionJob]) -> list[np.ndarray]:
        """Convert each job in turn (WORLD is C code working on one utterance at a time)."""
        return [self.convert(job).audio for job in jobs]

    # ------------------------------------------------------------------------------------------------
    @staticmethod
    def target_stats(target: Any) -> SpeakerStats:
        if isinstance(target, SpeakerStats):
            return target
        try:
            return SpeakerStats.model_validate(target)
        except Exception as exc:  # noqa: BLE001  (pydantic's ValidationError, or a non-mapping)
            raise InvalidRequest(f"target statistics are not WORLD speaker statistics: {exc}",
                                 param="voice", code="bad_reference") from None

    def estimate_warp(self, log_sp: np.ndarray, fs: int, target: SpeakerStats, f0_ratio: float = 1.0) -> float:
        """The frequency scaling bringing ``log_sp``'s frames (ln envelopes) nearest to the target's codebook.

        The mean nearest-entry distance, relative to its minimum over the candidates, plus a weak prior
        ``warp_prior * (ln alpha - warp_prior_exponent * ln f0_ratio)^2``: formants and pitch both scale
        with the speaker's size, and where the envelope evidence is flat (short or unusual source text)
        the prior keeps a female target from being warped down or a male one up.
        """
        if len(log_sp) < MIN_SOURCE_FRAMES:
            return 1.0
        grid = target.grid()
        codebook = np.asarray(target.envelope_codebook, dtype=np.float64)
        costs = np.array([nearest(frame_features(log_sp, fs, grid, a), codebook)[0].mean() for a in self.warps])
        costs = costs / max(float(costs.min()), 1e-9)
        if self.warp_prior > 0:
            costs = costs + self.warp_prior * (np.log(self.warps) - self.warp_prior_exponent * math.log(f0_ratio)) ** 2
        best = int(costs.argmin())
        warp = math.log(self.warps[best])
        if 0 < best < len(costs) - 1:  # parabola through the minimum and its neighbours, on the log grid
            c0, c1, c2 = costs[best - 1: best + 2]
            curvature = c0 - 2.0 * c1 + c2
            if curvature > 0:
                warp += 0.5 * (c0 - c2) / curvature * math.log(self.warps[1] / self.warps[0])
        return math.exp(warp)

    def _to_bins(self, values: np.ndarray, grid: np.ndarray, fs: int, bins: int) -> np.ndarray:
        """Corrections sampled at ``grid`` Hz (last axis) -> every FFT bin (held flat beyond the grid)."""
        freqs = np.linspace(0.0, fs / 2.0, bins)
        position = np.interp(freqs, grid, np.arange(len(grid), dtype=np.float64))
        values = np.clip(values, -self.envelope_limit, self.envelope_limit)
        return _interpolate_rows(np.atleast_2d(values), position)

    def convert(self, job: ConversionJob) -> Conversion:
        """One job converted toward its target statistics (steps 1 .. 5 of the module docstring).

        Audio shorter than ``MIN_SOURCE_SECONDS`` or silent is returned unchanged.
        """
        import pyworld

        target = self.target_stats(job.target)
        fs = int(job.sample_rate)
        source = np.nan_to_num(np.asarray(job.audio, dtype=np.float32).reshape(-1))
        if len(source) < MIN_SOURCE_SECONDS * fs or float(np.max(np.abs(source))) < 1e-5:
            return Conversion(source.copy(), 1.0, 1.0, 0.0)
        if target.f0_method != self.f0_method:
            log.debug("target statistics used %s, this converter %s", target.f0_method, self.f0_method)
        x = source.astype(np.float64)
        f0, times = world_f0(x, fs, self.f0_method, self.frame_period, F0_FLOOR_HZ, F0_CEIL_HZ)
        sp = pyworld.cheaptrick(x, f0, times, fs)
        ap = pyworld.d4c(x, f0, times, fs)
        voiced = f0 > 0
        loud = loud_voiced(f0, sp)

        new_f0, f0_ratio = self.map_f0(f0, target)
        warp, envelope = self.warp_envelope(np.log(sp + 1e-20), loud, fs, target, f0_ratio)
        grid = target.grid()
        self.correct_long_term(envelope, loud, fs, target, grid)
        self.pull_to_codebook(envelope, voiced, fs, target, grid)
        y = self.synthesize(new_f0, envelope, ap, x, fs)
        return Conversion(y.astype(np.float32), warp, f0_ratio, float(voiced.mean()))

    def map_f0(self, f0: np.ndarray, target: SpeakerStats) -> tuple[np.ndarray, float]:
        """Step 1: (new F0, mean pitch ratio), the voiced frames' log-F0 mean and spread moved to the target's.

        Unvoiced frames stay 0; with no voiced frame the ratio is 1.0, and with fewer than
        ``MIN_F0_FRAMES`` (or no spread) the spread is kept as is (times ``f0_range``).
        """
        voiced = f0 > 0
        new_f0 = np.zeros_like(f0)
        f0_ratio = 1.0
        if voiced.any():
            log_f0 = np.log(f0[voiced])
            mu, sigma = float(log_f0.mean()), float(log_f0.std())
            spread = target.log_f0_std / sigma if voiced.sum() >= MIN_F0_FRAMES and sigma > 1e-3 else 1.0
            spread = float(np.clip(spread, 0.5, 2.0)) * self.f0_range
            new_f0[voiced] = np.exp(target.log_f0_mean + spread * (log_f0 - mu))
            f0_ratio = math.exp(target.log_f0_mean - mu)
        return new_f0, f0_ratio

    def warp_envelope(self, log_sp: np.ndarray, loud: np.ndarray, fs: int, target: SpeakerStats,
                      f0_ratio: float) -> tuple[float, np.ndarray]:
        """Step 2: (warp, warped ln envelope), the vocal-tract-length scaling estimated on the ``loud`` frames,
        raised to ``warp_strength`` and clamped to ``warp_min`` .. ``warp_max``."""
        warp = self.estimate_warp(log_sp[loud], fs, target, f0_ratio) ** self.warp_strength
        warp = float(np.clip(warp, self.warp_min, self.warp_max))
        bins = log_sp.shape[1]
        return warp, _interpolate_rows(log_sp, np.clip(np.arange(bins) / warp, 0, bins - 1))

    def correct_long_term(self, envelope: np.ndarray, loud: np.ndarray, fs: int, target: SpeakerStats,
                          grid: np.ndarray) -> None:
        """Step 3, in place: ``envelope`` moved toward the target's mean envelope by ``envelope_strength``
        times the smoothed, mean-free difference measured on the ``loud`` frames (skipped with fewer than
        ``MIN_SOURCE_FRAMES`` of them)."""
        if self.envelope_strength > 0 and loud.sum() >= MIN_SOURCE_FRAMES:
            difference = np.asarray(target.envelope_mean) - frame_features(envelope[loud], fs, grid).mean(axis=0)
            difference = difference - difference.mean()
            kernel = np.hanning(7)[1:-1]
            difference = np.convolve(np.pad(difference, 2, mode="edge"), kernel / kernel.sum(), mode="valid")
            envelope += self._to_bins(self.envelope_strength * difference, grid, fs, envelope.shape[1])

    def pull_to_codebook(self, envelope: np.ndarray, voiced: np.ndarray, fs: int, target: SpeakerStats,
                         grid: np.ndarray) -> None:
        """Step 4, in place: each ``voiced`` frame of ``envelope`` moved ``codebook_strength`` of the way to its
        nearest target codebook entry (skipped with fewer than ``MIN_SOURCE_FRAMES`` voiced frames)."""
        if self.codebook_strength > 0 and voiced.sum() >= MIN_SOURCE_FRAMES:
            codebook = np.asarray(target.envelope_codebook, dtype=np.float64)
            features = frame_features(envelope[voiced], fs, grid)
            nearest_entry = codebook[nearest(features, codebook)[1]]
            correction = self.codebook_strength * (nearest_entry - features)
            envelope[voiced] += self._to_bins(correction, grid, fs, envelope.shape[1])

    def synthesize(self, f0: np.ndarray, envelope: np.ndarray, ap: np.ndarray, x: np.ndarray, fs: int) -> np.ndarray:
        """Step 5: WORLD synthesis from F0, ln envelope and aperiodicity, with the length and RMS of the
        source ``x``, scaled down if needed to peak at 0.999."""
        import pyworld

        y = pyworld.synthesize(np.ascontiguousarray(f0), np.ascontiguousarray(np.exp(envelope)),
                               np.ascontiguousarray(ap), fs, self.frame_period)
        y = y[: len(x)]
        if len(y) < len(x):
            y = np.pad(y, (0, len(x) - len(y)))
        level = math.sqrt(float(np.mean(y ** 2)))
        if level > 0:
            y *= math.sqrt(float(np.mean(x ** 2))) / level
        peak = float(np.max(np.abs(y)))
        if peak > 0.999:
            y *= 0.999 / peak
        return y
