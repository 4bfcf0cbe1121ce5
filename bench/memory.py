"""Memory under mixed requests of random lengths: RSS of `harmony serve` after warm-up and every 100
requests, with the memory release on (the default) and off (``HARMONY_RELEASE_MEMORY=0``), side by side.

    python -m bench.memory [--requests 1000] [--clients 4] [--max-chars 400] [--without-requests N]

Each run starts `harmony serve` (embedded default config, a temporary HARMONY_DATA_DIR), warms up
with one small request of each kind, then sends ``--requests`` requests from ``--clients`` concurrent
clients, drawn at random: speech on Piper, espeak-ng and Kokoro (text of 1 .. max-chars characters,
Kokoro a quarter of that in kana and kanji), transcription of 1 .. 30 s clips of the engine's own
speech (whisper-tiny.en and whisper-base), VAD of 1 .. 60 s clips, speaker embeddings of 2 .. 30 s
clips. The target: RSS at the end within 1.3x of RSS after warm-up.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import psutil
import soundfile

from tests.harmony_process import HarmonyProcess

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hum ancient songs "
         "near the river and a small boat drifts past old houses under grey autumn clouds").split()
KANA = ("あいうえおかきくけこさしすせそたちつてとなにぬねの"
        "はひふへほまみむめもやゆよ日本語音声合成東京天気今日明日")
RATE = 16000
TARGET = 1.3


def rss_mb(pid: int) -> float:
    """Resident memory of the server process and its children, in MiB."""
    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def english(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    text = " ".join(words)[:chars].strip()
    return (text or "hello") + "."


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


class Traffic:
    """Random requests of every kind against one running engine."""

    def __init__(self, url: str, max_chars: int, seed: int) -> None:
        self.url = url
        self.max_chars = max_chars
        self.seed = seed
        self.speech = np.zeros(0, dtype=np.float32)

    def prepare(self, client: httpx.Client) -> None:
        """The engine's own speech (Piper), resampled to 16 kHz: the source of every clip."""
        text = " ".join(english(random.Random(self.seed + i), 200) for i in range(4))
        response = client.post("/v1/audio/speech", json={"model": "piper-en-joe", "voice": "joe", "input": text,
                                                          "response_format": "wav", "sample_rate": RATE})
        response.raise_for_status()
        audio, rate = soundfile.read(io.BytesIO(response.content), dtype="float32")
        assert rate == RATE, rate
        self.speech = audio.reshape(-1)

    def clip(self, seconds: float) -> bytes:
        n = int(seconds * RATE)
        return wav_bytes(np.tile(self.speech, -(-n // len(self.speech)))[:n])

    def send(self, client: httpx.Client, rng: random.Random) -> int:
        kind = rng.choices(["piper", "espeak", "kokoro", "stt", "vad", "embed"], [30, 15, 8, 20, 15, 12])[0]
        if kind in ("piper", "espeak", "kokoro"):
            return self.speak(client, kind, rng).status_code
        if kind == "stt":
            model = rng.choice(["whisper-tiny.en", "whisper-base"])
            files = {"file": ("clip.wav", self.clip(rng.uniform(1, 30)), "audio/wav")}
            return client.post("/v1/audio/transcriptions", data={"model": model}, files=files).status_code
        if kind == "vad":
            files = {"file": ("clip.wav", self.clip(rng.uniform(1, 60)), "audio/wav")}
            return client.post("/v1/audio/vad", files=files).status_code
        files = {"file": ("clip.wav", self.clip(rng.uniform(2, 30)), "audio/wav")}
        return client.post("/v1/audio/embeddings", files=files).status_code

    def speak(self, client: httpx.Client, kind: str, rng: random.Random, chars: int | None = None) -> httpx.Response:
        if kind == "kokoro":
            k = chars or rng.randint(1, max(1, self.max_chars // 4))
            text = "".join(rng.choice(KANA) for _ in range(k))
            body = {"model": "kokoro-ja", "voice": "kokoro-jf_alpha", "input": text}
        else:
            text = english(rng, chars or rng.randint(1, self.max_chars))
            body = {"model": "espeak-ng", "voice": "espeak-en", "input": text} if kind == "espeak" else \
                {"model": "piper-en-joe", "voice": "joe", "input": text}
        return client.post("/v1/audio/speech", json={**body, "response_format": "wav"})

    def warm_up(self, client: httpx.Client) -> None:
        """One small request of each kind."""
        rng = random.Random(self.seed)
        for kind in ("piper", "espeak", "kokoro"):
            self.speak(client, kind, rng, chars=40).raise_for_status()
        for model in ("whisper-tiny.en", "whisper-base"):
            client.post("/v1/audio/transcriptions", data={"model": model},
                        files={"file": ("w.wav", self.clip(5), "audio/wav")}).raise_for_status()
        client.post("/v1/audio/vad", files={"file": ("w.wav", self.clip(5), "audio/wav")}).raise_for_status()
        client.post("/v1/audio/embeddings", files={"file": ("w.wav", self.clip(5), "audio/wav")}).raise_for_status()


@contextmanager
def engine(release: bool):
    """`harmony serve` with the memory release on or off, in a temporary data directory."""
    saved = dict(os.environ)
    os.environ["HARMONY_RELEASE_MEMORY"] = "1" if release else "0"
    os.environ["HARMONY_DATA_DIR"] = tempfile.mkdtemp(prefix="harmony-bench-memory-")
    process = HarmonyProcess(timeout=600).start()
    try:
        yield process
    finally:
        process.stop()
        os.environ.clear()
        os.environ.update(saved)


def run(release: bool, requests: int, clients: int, max_chars: int, seed: int) -> dict:
    with engine(release) as process:
        pid = process.proc.pid
        traffic = Traffic(process.url, max_chars, seed)
        with httpx.Client(base_url=process.url, timeout=900) as client:
            ready = rss_mb(pid)
            traffic.prepare(client)
            traffic.warm_up(client)
        warm = rss_mb(pid)
        samples, statuses = [], []
        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            http = [httpx.Client(base_url=process.url, timeout=900) for _ in range(clients)]
            for start in range(0, requests, 100):
                batch = range(start, min(requests, start + 100))
                statuses += pool.map(lambda i: traffic.send(http[i % clients], random.Random(seed * 7919 + i)), batch)
                samples.append(rss_mb(pid))
                print(f"  {'on ' if release else 'off'} {batch.stop:5d} requests: RSS {samples[-1]:7.0f} MiB",
                      file=sys.stderr, flush=True)
            for client in http:
                client.close()
        return {"ready": ready, "warm": warm, "samples": samples, "end": samples[-1], "peak": max(samples),
                "requests": requests, "errors": sum(s >= 400 for s in statuses),
                "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--without-requests", type=int, help="requests of the run with the release off "
                                                             "(default: --requests; 0 skips that run)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-chars", type=int, default=400, help="longest TTS input (Kokoro: a quarter)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    without = args.requests if args.without_requests is None else args.without_requests
    runs = {"release on (default)": run(True, args.requests, args.clients, args.max_chars, args.seed)}
    if without:
        runs["release off (HARMONY_RELEASE_MEMORY=0)"] = run(False, without, args.clients, args.max_chars, args.seed)
    print(f"\nharmony serve, {args.clients} clients, TTS 1..{args.max_chars} chars, STT 1..30 s, VAD 1..60 s, "
          f"embeddings 2..30 s; {os.cpu_count()} CPUs")
    print(f"{'run':40} {'requests':>8} {'ready MiB':>9} {'warm MiB':>9} {'end MiB':>8} {'peak MiB':>8} "
          f"{'end/warm':>8} {'errors':>6} {'seconds':>8}")
    for name, r in runs.items():
        ratio = r["end"] / r["warm"]
        print(f"{name:40} {r['requests']:8d} {r['ready']:9.0f} {r['warm']:9.0f} {r['end']:8.0f} {r['peak']:8.0f} "
              f"{ratio:7.2f}x {r['errors']:6d} {r['seconds']:8.0f}")
        print(f"{'':40} every 100: {' '.join(f'{s:.0f}' for s in r['samples'])}")
    print(f"target: end/warm <= {TARGET}x")


if __name__ == "__main__":
    main()
