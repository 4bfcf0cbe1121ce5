"""Short clips (2 to 6 s, as a voice assistant sends them) under many concurrent clients: window packing on
against off, both through ``harmony serve`` in one run, with the same model, batching and clips. The two servers run
side by side (an idle one costs nothing) and are measured in turns, so that the load of a shared machine
falls on both alike.

    python -m bench.stt --short [--model whisper-tiny.en] [--requests 96] [--clients 16] [--rounds 3]

Prints one table: throughput (seconds of audio per wall second), latency, word error rate against the clips' known
text, the windows decoded packed and those decoded again alone, and the ratios packed over unpacked.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import yaml

from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, edit_distance, normalize, silence, synthesize, wav_bytes

# what people say to a voice assistant, 1.8 to 6 s of Piper speech; with SENTENCES, 16 different texts
COMMANDS = [
    "Turn off the lights in the kitchen.",
    "Set a timer for ten minutes.",
    "What is the weather like in Paris tomorrow?",
    "Play some quiet music in the living room, please.",
    "Remind me to water the plants when I get home tonight.",
    "Call my sister and tell her that I will be late for dinner.",
    "Add eggs, butter and two bags of flour to the shopping list for the weekend.",
    "How long does it take to drive from the airport to the city in the morning traffic?",
    "Please send a message to the team saying that the meeting has moved to Thursday afternoon.",
    "Open the garage door, switch on the heating, and lock the front door when everybody has left.",
]
MIN_S, MAX_S = 2.0, 6.0


def short_clips() -> list[tuple[np.ndarray, int, str]]:
    """Each text as a clip of 2 to 6 s: the speech, with a little silence before and after as a microphone
    gives (more where the speech alone is shorter than 2 s), cut to 6 s at most."""
    clips = []
    for k, text in enumerate(COMMANDS + SENTENCES):
        speech, rate = synthesize(text)
        lead = 0.1 + 0.1 * (k % 4)
        tail = max(0.2, MIN_S - lead - len(speech) / rate)
        audio = np.concatenate([silence(lead, rate), speech, silence(tail, rate)])[: int(MAX_S * rate)]
        clips.append((audio, rate, text))
    return clips


def config_file(model: str, source: dict, pack: bool, args: argparse.Namespace) -> str:
    config = {"models": [{"name": model, "task": "stt", "backend": "faster-whisper", **source,
                          "compute_type": "int8", "options": {"beam_size": 1},
                          "batching": {"max_batch_size": args.max_batch_size, "instances": args.instances,
                                       "max_queue_delay_ms": args.max_queue_delay_ms, "max_queue_size": 1024,
                                       "pack_short_windows": pack}}]}
    path = os.path.join(tempfile.mkdtemp(), f"bench-{'packed' if pack else 'unpacked'}.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    return path


def counters(url: str, model: str) -> dict[str, float]:
    from bench.stt import batch_histogram, metrics_text

    text = metrics_text(url)
    out = {"batches": batch_histogram(url, model).get("count", 0.0),
           "items": batch_histogram(url, model).get("sum", 0.0)}
    for name in ("harmony_stt_packed_windows_total", "harmony_stt_pack_fallbacks_total"):
        line = next((line for line in text.splitlines() if line.startswith(f'{name}{{model="{model}"}}')), None)
        out[name] = float(line.rsplit(" ", 1)[1]) if line else 0.0
    return out


class Client:
    """Transcribes clips through one ``harmony serve``, ``clients`` at a time, each client sending its next clip
    when answered; keeps the latencies, word errors and the seconds it measured."""

    def __init__(self, harmony: HarmonyProcess, model: str, clips: list[tuple[np.ndarray, int, str]],
                 clients: int) -> None:
        from bench.stt import service_url

        self.model, self.clients = model, clients
        self.payloads = [(wav_bytes(audio, rate), len(audio) / rate, text) for audio, rate, text in clips]
        self.http = httpx.Client(base_url=harmony.url, timeout=600,
                                 limits=httpx.Limits(max_connections=clients * 2))
        self.url = service_url(harmony)
        self.latencies: list[float] = []
        self.errors = self.words = 0
        self.wall = self.audio_s = 0.0
        self.delta: dict[str, float] = {}

    def _one(self, i: int) -> None:
        data, _, text = self.payloads[i % len(self.payloads)]
        started = time.perf_counter()
        response = self.http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", data)},
                                  data={"model": self.model, "language": "en"})
        response.raise_for_status()
        self.latencies.append(time.perf_counter() - started)
        self.errors += edit_distance(normalize(text), normalize(response.json()["text"]))
        self.words += len(normalize(text))

    def _all(self, indexes: range) -> None:
        with ThreadPoolExecutor(self.clients) as pool:
            list(pool.map(self._one, indexes))

    def warm_up(self) -> None:
        """Every clip once, not counted."""
        self._all(range(len(self.payloads)))
        self.latencies.clear()
        self.errors = self.words = 0

    def measure(self, first: int, requests: int) -> None:
        before = counters(self.url, self.model)
        started = time.perf_counter()
        self._all(range(first, first + requests))
        self.wall += time.perf_counter() - started
        after = counters(self.url, self.model)
        for key in after:
            self.delta[key] = self.delta.get(key, 0.0) + after[key] - before[key]
        self.audio_s += sum(self.payloads[i % len(self.payloads)][1] for i in range(first, first + requests))

    def result(self) -> dict:
        self.http.close()
        ordered = sorted(self.latencies)
        d = self.delta
        return {"throughput": self.audio_s / self.wall, "wall": self.wall, "p50": statistics.median(ordered),
                "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
                "wer": self.errors / self.words, "windows": d["items"],
                "mean_batch": d["items"] / d["batches"] if d["batches"] else 0.0,
                "packed": d["harmony_stt_packed_windows_total"], "again": d["harmony_stt_pack_fallbacks_total"]}


def short_main(model: str, source: dict, args: argparse.Namespace) -> int:
    clips = short_clips()
    lengths = [len(a) / r for a, r, _ in clips]
    print(f"# bench/stt.py --short  model={model}  {args.requests // args.rounds * args.rounds} requests each, in "
          f"{args.rounds} turns, of {len(clips)} clips "
          f"({min(lengths):.1f}-{max(lengths):.1f} s, mean {statistics.mean(lengths):.1f} s)  clients={args.clients}  "
          f"instances={args.instances}  max_batch_size={args.max_batch_size}  "
          f"max_queue_delay_ms={args.max_queue_delay_ms:g}  greedy int8  machine={platform.machine()} "
          f"cpus={os.cpu_count()} python={platform.python_version()}", flush=True)
    # both servers up at once (an idle one costs nothing), measured in turns, so that a change in the load of a
    # shared machine falls on both alike
    names = ("unpacked", "packed")
    servers = {name: HarmonyProcess(config=config_file(model, source, name == "packed", args)) for name in names}
    try:
        for server in servers.values():
            server.start()
        clients = {name: Client(servers[name], model, clips, args.clients) for name in names}
        for client in clients.values():
            client.warm_up()
        share = args.requests // args.rounds
        for turn in range(args.rounds):
            for name in names:
                clients[name].measure(turn * share, share)
        results = {name: clients[name].result() for name in names}
    finally:
        for server in servers.values():
            server.stop()
    header = (f"{'run':<22}{'audio s / wall s':>17}{'p50 s':>8}{'p95 s':>8}{'WER':>8}{'windows':>9}"
              f"{'mean batch':>12}{'packed windows':>16}{'decoded again':>15}")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(f"{name:<22}{r['throughput']:>17.2f}{r['p50']:>8.2f}{r['p95']:>8.2f}{r['wer']:>8.1%}"
              f"{r['windows']:>9.0f}{r['mean_batch']:>12.1f}{r['packed']:>16.0f}{r['again']:>15.0f}")
    p, u = results["packed"], results["unpacked"]
    print(f"{'packed / unpacked':<22}{p['throughput'] / u['throughput']:>16.2f}x{p['p50'] / u['p50']:>7.2f}x"
          f"{p['p95'] / u['p95']:>7.2f}x{(p['wer'] - u['wer']) * 100:>+7.1f}pt")
    print("(same clips, model and batching; packing on or off: batching.pack_short_windows)")
    return 0
