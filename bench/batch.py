"""The Batch API against interactive requests, side by side in one run of `harmony serve` (Whisper tiny.en).

    python -m bench.batch [--clips 16] [--concurrency 16] [--probes 30]

1. Throughput: N short clips (one sentence each, tests/speech.py) sent as N concurrent interactive
   transcriptions, then the same N as one batch (upload, create, wait for completed): wall times and their ratio
   (target: the batch at least as fast, ratio <= 1.0).
   The batch is timed from its creation (its audio uploaded before, as files), and again with the uploads.
2. Interference: interactive latency of one client sending transcriptions back to back, alone and while a batch
   of 4N clips runs (at batch priority): p50 and p95 of each and the p95 ratio (target <= 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, synthesize, wav_bytes


def config_file(concurrency: int) -> str:
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "services/defaults/serve.yaml").read_text())
    config["models"] = [m for m in config["models"] if m["name"] == "whisper-tiny.en"]
    config["routes"] = []
    folder = Path(tempfile.mkdtemp(prefix="harmony-bench-batch-"))
    config.update(data_dir=str(folder / "data"), audit={"sink": "none"},
                  batches={"concurrency": concurrency, "poll_s": 0.2})
    (folder / "serve.yaml").write_text(yaml.safe_dump(config))
    return str(folder / "serve.yaml")


def clips(n: int) -> list[bytes]:
    return [wav_bytes(*synthesize(SENTENCES[i % len(SENTENCES)])) for i in range(n)]


async def transcribe(client: httpx.AsyncClient, audio: bytes) -> float:
    started = time.perf_counter()
    response = await client.post("/v1/audio/transcriptions", data={"model": "whisper-tiny.en"},
                                 files={"file": ("clip.wav", audio)})
    response.raise_for_status()
    return time.perf_counter() - started


async def interactive_burst(client: httpx.AsyncClient, audio: list[bytes]) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(transcribe(client, a) for a in audio))
    return time.perf_counter() - started


async def upload(client: httpx.AsyncClient, audio: list[bytes]) -> list[str]:
    ids = []
    for i, data in enumerate(audio):
        made = await client.post("/v1/files", data={"purpose": "user_data"}, files={"file": (f"{i}.wav", data)})
        ids.append(made.raise_for_status().json()["id"])
    return ids


async def submit_batch(client: httpx.AsyncClient, audio: list[bytes], ids: list[str] | None = None) -> str:
    ids = ids or await upload(client, audio)
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {"model": "whisper-tiny.en", "file": file_id}} for i, file_id in enumerate(ids)]
    source = await client.post("/v1/files", data={"purpose": "batch"},
                               files={"file": ("in.jsonl", "".join(json.dumps(x) + "\n" for x in lines))})
    batch = await client.post("/v1/batches", json={"input_file_id": source.raise_for_status().json()["id"],
                                                   "endpoint": "/v1/audio/transcriptions", "completion_window": "24h"})
    return batch.raise_for_status().json()["id"]


async def wait_batch(client: httpx.AsyncClient, batch_id: str) -> dict:
    while True:
        batch = (await client.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.1)


async def batch_wall(client: httpx.AsyncClient, audio: list[bytes]) -> tuple[float, float, dict]:
    """(seconds from the first upload to completed, seconds from the batch's creation to completed, the batch)."""
    started = time.perf_counter()
    ids = await upload(client, audio)
    created = time.perf_counter()
    batch = await wait_batch(client, await submit_batch(client, audio, ids))
    return time.perf_counter() - started, time.perf_counter() - created, batch


async def probe_latencies(client: httpx.AsyncClient, audio: list[bytes], count: int) -> list[float]:
    return [await transcribe(client, audio[i % len(audio)]) for i in range(count)]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


async def run(url: str, args) -> None:
    audio = clips(args.clips)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await interactive_burst(client, audio[:4])  # warm-up
        burst = await interactive_burst(client, audio)
        with_uploads_s, batch_s, batch = await batch_wall(client, audio)
        alone = await probe_latencies(client, audio, args.probes)
        background = await submit_batch(client, audio * 4)
        while (await client.get(f"/v1/batches/{background}")).json()["status"] != "in_progress":
            await asyncio.sleep(0.05)
        loaded = await probe_latencies(client, audio, args.probes)
        state = (await client.get(f"/v1/batches/{background}")).json()
        await client.post(f"/v1/batches/{background}/cancel")
    print(f"{args.clips} clips, runner concurrency {args.concurrency}")
    print(f"{'':34}{'interactive':>14}{'batch':>12}{'ratio':>9}")
    print(f"{'wall time for N clips (s)':34}{burst:14.2f}{batch_s:12.2f}{batch_s / burst:9.2f}   "
          f"(batch {batch['status']}, {batch['request_counts']}; from its creation, the audio uploaded)")
    print(f"{'  with the uploads (s)':34}{burst:14.2f}{with_uploads_s:12.2f}{with_uploads_s / burst:9.2f}")
    print(f"{'':34}{'alone':>14}{'+ batch':>12}{'ratio':>9}")
    print(f"{'interactive p50 (s)':34}{statistics.median(alone):14.3f}{statistics.median(loaded):12.3f}"
          f"{statistics.median(loaded) / statistics.median(alone):9.2f}")
    print(f"{'interactive p95 (s)':34}{p95(alone):14.3f}{p95(loaded):12.3f}{p95(loaded) / p95(alone):9.2f}   "
          f"(background batch still {state['status']}, {state['request_counts']['completed']} of "
          f"{state['request_counts']['total']} done during the probes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16, help="the runner's batches.concurrency")
    parser.add_argument("--probes", type=int, default=30, help="interactive requests per latency measurement")
    args = parser.parse_args(argv)
    harmony = HarmonyProcess(config=config_file(args.concurrency), timeout=600).start()
    try:
        asyncio.run(run(harmony.url, args))
    finally:
        harmony.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
