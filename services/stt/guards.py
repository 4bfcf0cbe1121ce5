"""Whisper's guards against hallucinated text, as sequential Whisper (and faster-whisper) has them.

A window decoded at temperature 0 is accepted unless its text is too repetitive
(gzip compression ratio above ``compression_ratio_threshold``) or Whisper is unsure
of it (average log-probability per token below ``log_prob_threshold``); a window
that fails is decoded again at the next temperature of the ladder (0.0, 0.2, ...,
1.0). When every temperature fails, the decode with the best average
log-probability among those under the compression threshold (or among all, when
none is) is kept. A window whose no-speech probability is above
``no_speech_threshold`` while its average log-probability is under
``log_prob_threshold`` is silent: it gives no text (and needs no fallback).

Each time a guard decides something other than "keep this decode", the window's result names why
(``FALLBACK_REASONS``; the STT service counts them as ``harmony_stt_fallbacks_total{model, reason}``).

This module holds the decisions only (no model): the backend batches the decoding.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

# faster-whisper's defaults (WhisperModel.transcribe)
COMPRESSION_RATIO_THRESHOLD = 2.4
LOG_PROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
TEMPERATURE_INCREMENT = 0.2
BEST_OF = 5
_OFF = {"none", "off", "null", "false", ""}

# why a window was decoded again, or its decode not kept as it was (a small fixed set: a metric's label values)
FALLBACK_REASONS = (
    "compression_ratio",  # too repetitive: decoded again at the next temperature
    "log_prob",           # too unsure: decoded again at the next temperature
    "ladder_exhausted",   # every temperature failed: the best decode kept
    "no_speech",          # judged silent: its text dropped
    "fitted_context",     # a fitted (realtime) window failed a guard: decoded again over the whole 30 s
    "packed",             # a packed window failed a guard, or a member could not be split back: decoded alone
)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass
class Decode:
    """One decode of one window at one temperature."""

    output: Any  # ctranslate2 WhisperGenerationResult (or a stand-in in tests)
    avg_logprob: float
    temperature: float
    compression_ratio: float
    no_speech_prob: float
    fallbacks: tuple[str, ...] = ()  # FALLBACK_REASONS: why this window's ladder went as it did


def _threshold(options: Mapping[str, Any], name: str, default: float) -> float | None:
    value = options.get(name, default)
    if value is False or value is None or (isinstance(value, str) and value.strip().lower() in _OFF):
        return None
    return float(value)


@dataclass(frozen=True)
class Guards:
    compression_ratio_threshold: float | None = COMPRESSION_RATIO_THRESHOLD
    log_prob_threshold: float | None = LOG_PROB_THRESHOLD
    no_speech_threshold: float | None = NO_SPEECH_THRESHOLD
    temperature_increment_on_fallback: float | None = TEMPERATURE_INCREMENT
    best_of: int = BEST_OF

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Guards:
        """Thresholds from a SpeechModel's ``options``; ``none`` (or ``false``) turns one off."""
        increment = _threshold(options, "temperature_increment_on_fallback", TEMPERATURE_INCREMENT)
        guards = cls(
            compression_ratio_threshold=_threshold(options, "compression_ratio_threshold",
                                                   COMPRESSION_RATIO_THRESHOLD),
            log_prob_threshold=_threshold(options, "log_prob_threshold", LOG_PROB_THRESHOLD),
            no_speech_threshold=_threshold(options, "no_speech_threshold", NO_SPEECH_THRESHOLD),
            temperature_increment_on_fallback=increment if increment and increment > 0 else None,
            best_of=int(options.get("best_of", BEST_OF)))
        if guards.best_of < 1:
            raise ValueError("options.best_of must be at least 1")
        return guards

    @classmethod
    def off(cls) -> Guards:
        return cls(None, None, None, None, 1)

    def temperatures(self, start: float) -> tuple[float, ...]:
        """The ladder from a request's temperature up to 1.0 (OpenAI Whisper's ``temperature`` semantics)."""
        step = self.temperature_increment_on_fallback
        if not step:
            return (start,)
        ladder, t = [], start
        while t <= 1.0 + 1e-6:
            ladder.append(round(t, 6))
            t += step
        return tuple(ladder) or (start,)

    def is_silent(self, no_speech_prob: float, avg_logprob: float) -> bool:
        return (self.no_speech_threshold is not None and self.log_prob_threshold is not None
                and no_speech_prob > self.no_speech_threshold and avg_logprob < self.log_prob_threshold)

    def too_repetitive(self, decode: Decode) -> bool:
        return self.compression_ratio_threshold is not None and decode.compression_ratio > \
            self.compression_ratio_threshold

    def needs_fallback(self, decode: Decode) -> bool:
        if self.is_silent(decode.no_speech_prob, decode.avg_logprob):
            return False
        unsure = self.log_prob_threshold is not None and decode.avg_logprob < self.log_prob_threshold
        return self.too_repetitive(decode) or unsure

    def fallbacks(self, decodes: list[Decode]) -> tuple[str, ...]:
        """Why a window's ladder went as it did: each decode that was tried again (too repetitive, or unsure),
        ``ladder_exhausted`` when the last failed too, ``no_speech`` when the last was judged silent."""
        reasons = ["compression_ratio" if self.too_repetitive(d) else "log_prob" for d in decodes[:-1]]
        last = decodes[-1]
        if self.needs_fallback(last):
            reasons.append("ladder_exhausted")
        elif self.is_silent(last.no_speech_prob, last.avg_logprob):
            reasons.append("no_speech")
        return tuple(reasons)

    def choose(self, decodes: list[Decode]) -> Decode:
        """The decode to keep from a window's ladder: the last, unless it failed too; then the best one (either
        with ``fallbacks`` saying why)."""
        last, fallbacks = decodes[-1], self.fallbacks(decodes)
        if not self.needs_fallback(last):
            return replace(last, fallbacks=fallbacks)
        candidates = [d for d in decodes if not self.too_repetitive(d)] or decodes
        best = max(candidates, key=lambda d: d.avg_logprob)
        # like faster-whisper: the result carries the last temperature tried
        return Decode(best.output, best.avg_logprob, last.temperature, best.compression_ratio, best.no_speech_prob,
                      fallbacks)
