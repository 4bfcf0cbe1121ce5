"""A soak: `harmony serve` (the default config) at twice its capacity, with every endpoint, clients that
disconnect, and bad inputs mixed in.

    python -m bench.soak [--seconds 600] [--overload 2.0] [--calibrate 60] [--paths]

First a closed loop of a few clients measures what the engine completes per second on this mix (its
capacity); then requests arrive at random (Poisson) at ``--overload`` times that rate for ``--seconds``.
Every request says how long its client will wait (``X-Harmony-Timeout: 60``, as the OpenAI SDKs send
``X-Stainless-Timeout``), so overload must come back as 429s, not as timeouts. One request in ten
gives up after 50 ms to 1 s; one in ten is a bad input from the e2e corpus (tests/e2e/bad_inputs.py).

Prints, per kind of request and in total: sent, completed, 429s, expected 4xx (bad inputs), other 4xx,
5xx (must be 0), lost (no answer though the client waited: must be 0), abandoned, p50 and p95 latency of
completed requests; and the server's RSS after warm-up and at the end, and how long a transcription sent
right after the soak takes (no orphaned work).

``--paths`` runs the engine with API keys (``--require-auth``) and its Wyoming listener, and, while the HTTP mix
soaks it, drives the other paths at once (bench/soak_paths.py): keys with small audio quotas sending concurrent
transcriptions and speeches until refused (the overshoot past the quota must be at most one request's work),
realtime sessions, Wyoming clients, and a batch; one more table gives their tallies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import psutil
import soxr

from tests.e2e.bad_inputs import CASES
from tests.harmony_process import HarmonyProcess
from tests.servers import free_port
from tests.speech import SENTENCES, synthesize, wav_bytes

CLIENT_WAITS_S = 60.0
JAPANESE = ["こんにちは。", "今日は良い天気ですね。", "駅の近くに小さなパン屋があります。"]


@dataclass
class Tally:
    sent: int = 0
    ok: int = 0
    refused: int = 0
    refused_late: int = 0  # 429s that came after more than a second (shed from a queue, not refused at the door)
    bad_expected: int = 0
    bad_other: int = 0
    server_errors: int = 0
    lost: int = 0
    abandoned: int = 0
    latencies: list[float] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)  # a few unexpected answers, for the report


def clip(sentences: list[str]) -> bytes:
    """Speech of ``sentences`` at 16 kHz as WAV."""
    parts = []
    for sentence in sentences:
        audio, rate = synthesize(sentence)
        parts.append(soxr.resample(audio, rate, 16000))
        parts.append(np.zeros(4000, np.float32))
    return wav_bytes(np.concatenate(parts), 16000)


def requests_mix(rng: random.Random) -> list[tuple[str, float, Callable[[], dict[str, Any]]]]:
    """(kind, weight, kwargs for httpx.request): every endpoint, inputs of random length."""
    clips = [clip(SENTENCES[i:i + n]) for i in range(4) for n in (1, 2)]
    reference = clip(SENTENCES[:4])
    reference_b64 = base64.b64encode(reference).decode()

    def form(path: str, data: dict[str, str], audio: bytes | None = None, name: str = "file") -> dict[str, Any]:
        return {"method": "POST", "url": path, "data": data, "files": {name: ("a.wav", audio or rng.choice(clips))}}

    def speech(model: str, voice: str, text: str, **extra: Any) -> dict[str, Any]:
        return {"method": "POST", "url": "/v1/audio/speech",
                "json": {"model": model, "voice": voice, "input": text, **extra}}

    def sentences(n: int) -> str:
        return " ".join(rng.sample(SENTENCES, rng.randint(1, n)))

    return [
        ("stt tiny.en", 18, lambda: form("/v1/audio/transcriptions", {"model": "whisper-tiny.en"})),
        ("stt base", 8, lambda: form("/v1/audio/transcriptions", {"model": "whisper-1", "language": "en"})),
        ("stt stream", 4, lambda: form("/v1/audio/transcriptions", {"model": "whisper-tiny.en", "stream": "true"})),
        ("translate", 3, lambda: form("/v1/audio/translations", {"model": "whisper-1"})),
        ("tts piper", 14, lambda: speech("tts-1", "alloy", sentences(2), response_format=rng.choice(["mp3", "wav"]))),
        ("tts espeak", 8, lambda: speech("espeak-ng", "espeak-" + rng.choice(["en", "de", "fr"]), sentences(3))),
        ("tts kokoro", 4, lambda: speech("kokoro-ja", "kokoro-jf_alpha", rng.choice(JAPANESE), response_format="wav")),
        ("tts sse", 3, lambda: speech("tts-1", "alloy", sentences(1), stream_format="sse")),
        ("vad", 8, lambda: form("/v1/audio/vad", {"model": "silero-vad"})),
        ("embed", 5, lambda: form("/v1/audio/embeddings", {})),
        ("convert", 2, lambda: {**form("/v1/audio/conversions", {}),
                                "files": {"file": ("a.wav", rng.choice(clips)), "reference": ("r.wav", reference)}}),
        ("clone", 2, lambda: speech("voice-clone", "reference", sentences(1), reference_audio=reference_b64,
                                    response_format="wav")),
        ("models", 3, lambda: {"method": "GET", "url": "/v1/models"}),
    ]


HTTP_CASES = [case for case in CASES if "declared_length" not in case[3]()]  # those need a raw socket


def bad_input(rng: random.Random) -> tuple[dict[str, Any], tuple[int, ...]]:
    _, method, path, kwargs, expected = rng.choice(HTTP_CASES)
    return {"method": method, "url": path, **kwargs()}, expected


async def one_request(client: httpx.AsyncClient, tallies: dict[str, Tally], kind: str, kwargs: dict[str, Any],
                      expected_bad: tuple[int, ...] | None, abandon_after: float | None) -> None:
    tally = tallies[kind]
    tally.sent += 1
    started = time.monotonic()
    headers = {**kwargs.pop("headers", {}), "X-Harmony-Timeout": str(CLIENT_WAITS_S)}
    try:
        call = client.request(**kwargs, headers=headers)
        response = await (asyncio.wait_for(call, abandon_after) if abandon_after else call)
    except TimeoutError:
        tally.abandoned += 1
        return
    except httpx.HTTPError as exc:
        tally.lost += 1
        tally.samples.append(f"{type(exc).__name__}: {exc}"[:160])
        return
    _classify(tally, response, expected_bad, time.monotonic() - started)


def _classify(tally: Tally, response: httpx.Response, expected_bad: tuple[int, ...] | None, seconds: float) -> None:
    status = response.status_code
    if expected_bad is not None and (status in expected_bad or 400 <= status < 500 and status != 429):
        tally.bad_expected += 1
    elif status < 400:
        tally.ok += 1
        tally.latencies.append(seconds)
    elif status == 429:
        tally.refused += 1
        tally.refused_late += seconds > 1.0
    elif status < 500:
        tally.bad_other += 1
        tally.samples.append(f"{status}: {response.text[:160]}")
    else:
        tally.server_errors += 1
        tally.samples.append(f"{status}: {response.text[:160]}")


class Load:
    def __init__(self, url: str, seed: int = 7, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}
        self.rng = random.Random(seed)
        self.mix = requests_mix(self.rng)
        self.tallies: dict[str, Tally] = defaultdict(Tally)

    def pick(self) -> tuple[str, dict[str, Any], tuple[int, ...] | None, float | None]:
        if self.rng.random() < 0.1:
            kwargs, expected = bad_input(self.rng)
            return "bad input", kwargs, expected, None
        kind, _, make = self.rng.choices(self.mix, weights=[w for _, w, _ in self.mix])[0]
        abandon = self.rng.uniform(0.05, 1.0) if self.rng.random() < 0.1 else None
        return kind, make(), None, abandon

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=CLIENT_WAITS_S * 2, headers=self.headers,
                                 limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100))

    async def closed_loop(self, clients: int, seconds: float) -> float:
        """Completed requests per second with ``clients`` sending one after another."""
        self.tallies.clear()
        stop = time.monotonic() + seconds
        async with self.client() as client:
            async def worker() -> None:
                while time.monotonic() < stop:
                    kind, kwargs, expected, _ = self.pick()
                    await one_request(client, self.tallies, kind, kwargs, expected, None)
            await asyncio.gather(*(worker() for _ in range(clients)))
        done = sum(t.ok + t.bad_expected for t in self.tallies.values())
        return done / seconds

    async def open_loop(self, rate: float, seconds: float) -> None:
        self.tallies.clear()
        stop = time.monotonic() + seconds
        running: set[asyncio.Task] = set()
        async with self.client() as client:
            while time.monotonic() < stop:
                await asyncio.sleep(self.rng.expovariate(rate))
                task = asyncio.create_task(one_request(client, self.tallies, *self.pick()))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return (process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))) / 2**20


def report(tallies: dict[str, Tally], rss_start: float, rss_end: float, after_s: float, args) -> None:
    print(f"\nSoak: {args.seconds:.0f} s at {args.overload:g}x capacity ({args.rate:.2f} req/s offered, capacity "
          f"{args.capacity:.2f} req/s), {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    head = f"{'kind':<12} {'sent':>6} {'ok':>6} {'429':>5} {'4xx bad':>7} {'4xx other':>9} {'5xx':>4} " \
           f"{'lost':>4} {'left':>5} {'p50 s':>7} {'p95 s':>7}"
    print(head)
    print("-" * len(head))
    total = Tally()
    for kind in sorted(tallies):
        t = tallies[kind]
        _row(kind, t)
        for name in ("sent", "ok", "refused", "refused_late", "bad_expected", "bad_other", "server_errors", "lost",
                     "abandoned"):
            setattr(total, name, getattr(total, name) + getattr(t, name))
        total.latencies += t.latencies
        total.samples += t.samples
    print("-" * len(head))
    _row("total", total)
    print(f"\n429s after more than a second (shed from a queue): {total.refused_late} of {total.refused}")
    print(f"RSS after warm-up {rss_start:.0f} MB, at the end {rss_end:.0f} MB ({rss_end / rss_start:.2f}x)")
    print(f"a transcription sent after the soak took {after_s:.2f} s")
    for sample in total.samples[:10]:
        print("  unexpected:", sample)


def _row(kind: str, t: Tally) -> None:
    p50 = statistics.median(t.latencies) if t.latencies else float("nan")
    p95 = sorted(t.latencies)[int(0.95 * (len(t.latencies) - 1))] if t.latencies else float("nan")
    print(f"{kind:<12} {t.sent:>6} {t.ok:>6} {t.refused:>5} {t.bad_expected:>7} {t.bad_other:>9} "
          f"{t.server_errors:>4} {t.lost:>4} {t.abandoned:>5} {p50:>7.2f} {p95:>7.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--overload", type=float, default=2.0)
    parser.add_argument("--calibrate", type=float, default=60.0, help="seconds of the closed-loop capacity run")
    parser.add_argument("--clients", type=int, default=6, help="clients of the closed-loop capacity run")
    parser.add_argument("--paths", action="store_true",
                        help="keys with small quotas, realtime, Wyoming and batches too")
    args = parser.parse_args(argv)
    os.environ.setdefault("HARMONY_DATA_DIR", tempfile.mkdtemp(prefix="harmony-soak-"))
    headers, extra, env, quota_keys, admin = {}, [], None, [], ""
    if args.paths:
        from bench import soak_paths

        env = soak_paths.key_env(os.environ["HARMONY_DATA_DIR"])
        admin = soak_paths.create_key(env, "soak-admin", "--admin")["key"]
        quota_keys = [soak_paths.create_key(env, f"soak-quota-{i}", "--audio-seconds-per-day", str(soak_paths.QUOTA_S))
                      for i in range(soak_paths.QUOTA_KEYS)]
        wyoming_port = free_port()
        headers = {"Authorization": f"Bearer {admin}"}
        extra = ["--require-auth", "--wyoming-port", str(wyoming_port)]
        env = {"HARMONY_WYOMING_API_KEY": admin}
    harmony = HarmonyProcess(timeout=600, extra_args=extra, env=env).start()
    try:
        load = Load(harmony.url, headers=headers)
        asyncio.run(load.closed_loop(2, 20))  # warm-up: every model has run
        rss_start = rss_mb(harmony.proc.pid)
        args.capacity = asyncio.run(load.closed_loop(args.clients, args.calibrate))
        args.rate = args.capacity * args.overload
        print(f"capacity {args.capacity:.2f} req/s; soaking at {args.rate:.2f} req/s for {args.seconds:.0f} s",
              flush=True)
        paths = None
        if args.paths:
            async def soak_and_paths():
                return (await asyncio.gather(load.open_loop(args.rate, args.seconds),
                                             soak_paths.run_paths(harmony.url, wyoming_port, admin, quota_keys)))[1]
            paths = asyncio.run(soak_and_paths())
        else:
            asyncio.run(load.open_loop(args.rate, args.seconds))
        rss_end = rss_mb(harmony.proc.pid)
        started = time.monotonic()
        response = httpx.post(harmony.url + "/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                              files={"file": ("a.wav", clip(SENTENCES[:1]))}, timeout=120, headers=headers)
        after_s = time.monotonic() - started
        assert response.status_code == 200, response.text
        report(load.tallies, rss_start, rss_end, after_s, args)
        if paths is not None:
            soak_paths.print_paths(paths)
    finally:
        harmony.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
