"""Voice conversion on the WORLD vocoder (pyworld): no weights, a few statistics of the target voice.

For each job the source is analysed with WORLD (F0 by Harvest, or DIO + StoneMask; CheapTrick spectral
envelope; D4C aperiodicity) and resynthesised with

1. F0 mapped in the log domain to the target's mean and spread:
   ln f0' = mu_t + (sigma_t / sigma_s) * (ln f0 - mu_s), the source's mu_s and sigma_s taken from the
   utterance itself (the spread ratio clamped to 0.5 .. 2, and scaled by ``f0_range``);
2. the spectral envelope warped along frequency, vocal-tract-length style: the value at f is read at
   f / alpha, so formants move by alpha. alpha is the scaling, searched on a log grid inside
   ``warp_min`` .. ``warp_max``, that brings the source's voiced frames nearest to the target's envelope
   codebook (see ``harmony.vc.stats``), raised to ``warp_strength``;
3. a mild correction of the long-term envelope: ``envelope_strength`` times the smoothed difference
   between the target's mean envelope and the warped source's, clamped to +-``envelope_max_db``;
4. the aperiodicity kept as analysed; WORLD synthesis; the loudness (RMS) matched to the source, the
   length kept to the sample.

WORLD runs in C one utterance at a time, so ``run_batch`` loops over its jobs: a batch is no faster
than its jobs one after another, the batcher only bounds the queue. The work happens at the job's own
rate (16, 22.05, 24 kHz ...: WORLD's cost grows with the rate far less than Harvest's fixed cost).

Options (``spec.options``): ``f0_method`` (harvest | dio), ``frame_period_ms``, ``warp_strength``,
``warp_min``, ``warp_max``, ``envelope_strength``, ``envelope_max_db``, ``f0_range``.
A neural converter later implements the same protocol (``harmony.vc.types.VoiceConverter``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from harmony.core.errors import InvalidRequest
from harmony.core.specs import NamedModel
from harmony.vc.stats import (F0_CEIL_HZ, F0_FLOOR_HZ, SpeakerStats, analyze_speech, frame_features, loud_voiced,
                              nearest, world_f0)
from harmony.vc.types import ConversionJob

log = logging.getLogger("harmony.vc.world")

DEFAULTS: dict[str, Any] = {
    "f0_method": "harvest",
    "frame_period_ms": 5.0,
    "warp_strength": 1.0,
    "warp_min": 0.75,
    "warp_max": 1.45,
    "envelope_strength": 1.0,
    "envelope_max_db": 9.0,
    "f0_range": 1.0,
    "codebook_strength": 0.5,
}
WARP_STEPS = 48                  # log-spaced candidates between warp_min and warp_max
MIN_SOURCE_SECONDS = 0.05        # shorter audio is returned unchanged
MIN_SOURCE_FRAMES = 10           # loud voiced frames needed to estimate a warp (else no warp)
MIN_F0_FRAMES = 20               # voiced frames needed to estimate the source's F0 spread (else ratio 1)


def _option(spec: NamedModel, key: str):
    value = spec.options.get(key, DEFAULTS[key])
    return type(DEFAULTS[key])(value)


class WorldConverter:
    """Statistics-based voice conversion with the WORLD vocoder (the ``world`` vc backend)."""

    task = "vc"

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.f0_method = _option(spec, "f0_method")
        if self.f0_method not in ("harvest", "dio"):
            raise ValueError(f"{spec.name}: option f0_method must be harvest or dio, not '{self.f0_method}'")
        self.frame_period = _option(spec, "frame_period_ms")
        self.warp_strength = _option(spec, "warp_strength")
        self.warp_min = _option(spec, "warp_min")
        self.warp_max = _option(spec, "warp_max")
        if not 0.5 <= self.warp_min <= 1.0 <= self.warp_max <= 2.0:
            raise ValueError(f"{spec.name}: need 0.5 <= warp_min <= 1 <= warp_max <= 2")
        self.envelope_strength = _option(spec, "envelope_strength")
        self.envelope_max_db = _option(spec, "envelope_max_db")
        self.f0_range = _option(spec, "f0_range")
        self.codebook_strength = _option(spec, "codebook_strength")
        self.warps = np.exp(np.linspace(math.log(self.warp_min), math.log(self.warp_max), WARP_STEPS))
        self.last_warps: list[float] = []   # alpha used per job of the last batch (for logs and benchmarks)

    def load(self) -> None:
        import pyworld  # noqa: F401  (fail at startup, not at the first request, when it is missing)

    def analyze(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        return analyze_speech(audio, sample_rate).model_dump()

    def run_batch(self, jobs: Sequence[ConversionJob]) -> list[np.ndarray]:
        """Convert each job in turn (WORLD is C code working on one utterance at a time)."""
        self.last_warps = []
        out = []
        for job in jobs:
            audio, warp = self._convert(job)
            self.last_warps.append(warp)
            out.append(audio)
        return out

    # ------------------------------------------------------------------------------------------------
    def _target(self, target: Any) -> SpeakerStats:
        if isinstance(target, SpeakerStats):
            return target
        try:
            return SpeakerStats.model_validate(target)
        except Exception as exc:  # noqa: BLE001
            raise InvalidRequest(f"target statistics are not WORLD speaker statistics: {exc}",
                                 param="voice", code="bad_reference") from None

    def estimate_warp(self, log_sp: np.ndarray, mask: np.ndarray, fs: int, target: SpeakerStats) -> float:
        """The frequency scaling bringing the source's loud voiced frames nearest to the target's codebook."""
        if mask.sum() < MIN_SOURCE_FRAMES:
            return 1.0
        frames = log_sp[mask]
        grid = target.grid()
        codebook = np.asarray(target.envelope_codebook, dtype=np.float64)
        costs = np.array([nearest(frame_features(frames, fs, grid, a), codebook)[0].mean() for a in self.warps])
        best = int(costs.argmin())
        warp = float(self.warps[best])
        if 0 < best < len(costs) - 1:  # parabolic refinement on the log grid
            c0, c1, c2 = costs[best - 1: best + 2]
            denominator = c0 - 2.0 * c1 + c2
            if denominator > 0:
                step = math.log(self.warps[1] / self.warps[0])
                warp = math.exp(math.log(warp) + 0.5 * (c0 - c2) / denominator * step)
        return warp

    def _convert(self, job: ConversionJob) -> tuple[np.ndarray, float]:
        import pyworld

        target = self._target(job.target)
        fs = int(job.sample_rate)
        source = np.asarray(job.audio, dtype=np.float32).reshape(-1)
        if len(source) < MIN_SOURCE_SECONDS * fs or float(np.max(np.abs(source))) < 1e-5:
            return source.copy(), 1.0
        x = source.astype(np.float64)
        f0, times = world_f0(x, fs, self.f0_method, self.frame_period, F0_FLOOR_HZ, F0_CEIL_HZ)
        sp = pyworld.cheaptrick(x, f0, times, fs)
        ap = pyworld.d4c(x, f0, times, fs)
        log_sp = np.log(sp + 1e-20)

        # 1. F0: log-mean and spread to the target's
        voiced = f0 > 0
        new_f0 = np.zeros_like(f0)
        if voiced.any():
            log_f0 = np.log(f0[voiced])
            mu, sigma = float(log_f0.mean()), float(log_f0.std())
            ratio = target.log_f0_std / sigma if voiced.sum() >= MIN_F0_FRAMES and sigma > 1e-3 else 1.0
            ratio = float(np.clip(ratio, 0.5, 2.0)) * self.f0_range
            new_f0[voiced] = np.exp(target.log_f0_mean + ratio * (log_f0 - mu))

        # 2. vocal-tract-length warp of the envelope
        loud = loud_voiced(f0, sp)
        warp = self.estimate_warp(log_sp, loud, fs, target) ** self.warp_strength
        warp = float(np.clip(warp, self.warp_min, self.warp_max))
        bins = sp.shape[1]
        freqs = np.linspace(0.0, fs / 2.0, bins)
        position = np.clip(np.arange(bins) / warp, 0, bins - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, bins - 1)
        weight = position - low
        warped = log_sp[:, low] * (1.0 - weight) + log_sp[:, high] * weight

        # 3. mild long-term envelope correction toward the target
        if self.envelope_strength > 0 and loud.sum() >= MIN_SOURCE_FRAMES:
            grid = target.grid()
            current = frame_features(log_sp[loud], fs, grid, warp).mean(axis=0)
            difference = np.asarray(target.envelope_mean) - current
            difference -= difference.mean()
            kernel = np.hanning(7)[1:-1]
            kernel /= kernel.sum()
            difference = np.convolve(np.pad(difference, 2, mode="edge"), kernel, mode="valid")
            limit = self.envelope_max_db / 10.0 * math.log(10.0)   # dB -> ln of power (the envelope is power)
            difference = np.clip(self.envelope_strength * difference, -limit, limit)
            warped = warped + np.interp(freqs, grid, difference)[None, :]

        if self.codebook_strength > 0 and voiced.sum() >= MIN_SOURCE_FRAMES:
            grid = target.grid()
            feats = frame_features(warped[voiced], fs, grid)
            codebook = np.asarray(target.envelope_codebook, dtype=np.float64)
            index = nearest(feats, codebook)[1]
            delta = self.codebook_strength * (codebook[index] - feats)
            limit = self.envelope_max_db / 10.0 * math.log(10.0)
            delta = np.clip(delta, -limit, limit)
            position = np.interp(freqs, grid, np.arange(len(grid)))
            lo = np.floor(position).astype(np.int64); hi = np.minimum(lo + 1, len(grid) - 1); w = position - lo
            warped[voiced] += delta[:, lo] * (1 - w) + delta[:, hi] * w

        # 4. synthesis, same length and loudness as the source
        y = pyworld.synthesize(np.ascontiguousarray(new_f0), np.ascontiguousarray(np.exp(warped)),
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
        return y.astype(np.float32), warp
