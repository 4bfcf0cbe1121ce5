"""Voice-cloning latency: a registered voice against fresh reference audio on every request, side by side.

    python -m bench.clone [--requests 8]

With a registered voice the pipeline skips VAD and embedding (the voice's embedding and
speaker statistics are stored); with reference audio in the request every step runs.
Plain TTS (no cloning) is the baseline.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import statistics
import sys
import tempfile
import time

import httpx
import yaml

from tests.harmony_process import HarmonyProcess

REFERENCE_TEXT = ("今日はとても良い天気ですね。私は毎朝、駅の近くの小さな店でコーヒーを買います。"
                  "週末には友達と一緒に公園を散歩するのが好きです。")
TEXT = "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring these things."


def timed(http: httpx.Client, body: dict, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = http.post("/v1/audio/speech", json=body)
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "services", "defaults",
                                              "serve.yaml")))
    keep = {"silero-vad", "resemblyzer", "world-vc", "piper-en-joe", "kokoro-ja"}
    config["models"] = [m for m in config["models"] if m["name"] in keep]
    store = tempfile.mkdtemp()
    for model in config["models"]:
        if model["name"] == "world-vc":
            model["options"] = {"voice_store": store}
    path = os.path.join(tempfile.mkdtemp(), "clone.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    print(f"# bench/clone.py  requests={args.requests} each  text={len(TEXT)} chars  machine={platform.machine()} "
          f"cpus={os.cpu_count()} python={platform.python_version()}", flush=True)
    harmony = HarmonyProcess(config=path).start()
    try:
        http = httpx.Client(base_url=harmony.url, timeout=300)
        reference = http.post("/v1/audio/speech", json={"model": "kokoro-ja", "voice": "kokoro-jf_alpha",
                                                        "input": REFERENCE_TEXT, "response_format": "wav"}).content
        started = time.perf_counter()
        voice = http.post("/v1/audio/voices", data={"name": "bench"}, files={"file": ("r.wav", reference)})
        voice.raise_for_status()
        registration = time.perf_counter() - started
        plain = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "mp3"}
        registered = {**plain, "voice": voice.json()["id"]}
        fresh = {**plain, "reference_audio": base64.b64encode(reference).decode()}
        timed(http, registered, 1)  # warm-up
        timed(http, fresh, 1)
        rows = [("plain TTS (no cloning)", timed(http, plain, args.requests)),
                ("cloned, registered voice", timed(http, registered, args.requests)),
                ("cloned, fresh reference each time", timed(http, fresh, args.requests))]
    finally:
        harmony.stop()
    base = statistics.median(rows[1][1])
    header = f"{'run':<36}{'p50 s':>8}{'p95 s':>8}{'vs registered':>15}"
    print(f"reference: {len(reference) / 48000:.1f} s of speech; registering it took {registration:.2f} s")
    print(header)
    print("-" * len(header))
    for name, times in rows:
        p50 = statistics.median(times)
        p95 = sorted(times)[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(f"{name:<36}{p50:>8.2f}{p95:>8.2f}{p50 / base:>14.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
