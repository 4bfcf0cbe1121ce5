"""The soak's paths beyond plain HTTP (``python -m bench.soak --paths``): keys with small audio quotas under
concurrent requests, realtime sessions, Wyoming clients and batches, run beside the HTTP mix.

Per path it counts what was sent, completed, refused (429), 5xx (must be 0), lost (no answer although the
client waited: must be 0), and for the quota keys the overshoot: audio seconds charged past the quota, which must
be at most one request's work (the largest request a key sent).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import soxr
import websockets

from tests.realtime_client import append, pcm16, ws_url
from tests.speech import SENTENCES, silence, synthesize, wav_bytes

QUOTA_S = 20.0          # each quota key's audio seconds per day
QUOTA_KEYS = 3
WAVE = 6                # concurrent requests a quota key sends at once
REALTIME_SESSIONS = 4
REALTIME_TURNS = 3
WYOMING_CLIENTS = 4
BATCH_LINES = 8


@dataclass
class PathTally:
    sent: int = 0
    ok: int = 0
    refused: int = 0
    server_errors: int = 0
    lost: int = 0
    overshoot_s: float = 0.0        # the worst key's audio seconds past its quota
    largest_s: float = 0.0          # the largest request's work a key sent (the bound on the overshoot)
    samples: list[str] = field(default_factory=list)

    def answer(self, status: int, text: str = "") -> None:
        if status < 400:
            self.ok += 1
        elif status == 429:
            self.refused += 1
        elif status >= 500:
            self.server_errors += 1
            self.samples.append(f"{status}: {text[:160]}")
        else:
            self.samples.append(f"{status}: {text[:160]}")

    def failed(self, exc: BaseException) -> None:
        self.lost += 1
        self.samples.append(f"{type(exc).__name__}: {exc}"[:160])


def create_key(env: dict[str, str], name: str, *flags: str) -> dict[str, Any]:
    """A key made with the CLI against the engine's database (the one ``HARMONY_DATA_DIR`` names)."""
    out = subprocess.run([sys.executable, "-m", "services.cli", "keys", "create", "--name", name, "--json", *flags],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def speech_16k(text: str) -> np.ndarray:
    audio, rate = synthesize(text)
    padded = np.concatenate([silence(0.2, rate), audio, silence(0.6, rate)])
    return soxr.resample(padded, rate, 16000).astype(np.float32)


async def quota_path(url: str, admin: str, keys: list[dict[str, Any]], tally: PathTally) -> None:
    """Each key sends waves of ``WAVE`` concurrent transcriptions and speeches until a whole wave is refused."""
    clips = [speech_16k(s) for s in SENTENCES[:3]]
    largest = max(len(c) for c in clips) / 16000
    texts = SENTENCES[3:6]

    async def one(client: httpx.AsyncClient, key: str, k: int) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        tally.sent += 1
        try:
            if k % 2:
                response = await client.post("/v1/audio/speech", headers=headers, json={
                    "model": "tts-1", "voice": "alloy", "input": texts[k % len(texts)], "response_format": "wav"})
            else:
                response = await client.post("/v1/audio/transcriptions", headers=headers,
                                             data={"model": "whisper-tiny.en"},
                                             files={"file": ("a.wav", wav_bytes(clips[k % len(clips)], 16000))})
        except httpx.HTTPError as exc:
            tally.failed(exc)
            return 0
        tally.answer(response.status_code, response.text)
        return response.status_code

    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for key in keys:
            for _ in range(20):
                statuses = await asyncio.gather(*(one(client, key["key"], k) for k in range(WAVE)))
                if all(s == 429 for s in statuses):
                    break
        for key in keys:
            usage = (await client.get("/admin/usage", params={"key_id": key["id"]},
                                      headers={"Authorization": f"Bearer {admin}"})).json()
            totals = usage["totals"].get(key["id"], {})
            used = float(totals.get("audio_seconds_in", 0.0)) + float(totals.get("audio_seconds_out", 0.0))
            tally.overshoot_s = max(tally.overshoot_s, used - QUOTA_S)
    speech_s = [len(synthesize(t)[0]) / 22050 for t in texts]
    tally.largest_s = max(largest, max(speech_s) + 0.5)


async def realtime_path(url: str, key: str, tally: PathTally) -> None:
    """``REALTIME_SESSIONS`` sessions at once, each ``REALTIME_TURNS`` turns at real-time pace."""
    turns = [pcm16(np.concatenate([speech_16k(s), np.zeros(16000, np.float32)]), 16000, 24000)
             for s in SENTENCES[:REALTIME_TURNS]]

    async def session(offset: float) -> None:
        await asyncio.sleep(offset)
        tally.sent += REALTIME_TURNS
        try:
            async with websockets.connect(ws_url(url), max_size=2 ** 24,
                                          additional_headers={"Authorization": f"Bearer {key}"}) as ws:
                await ws.recv()
                await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                    "input": {"transcription": {"model": "whisper-tiny.en", "language": "en"},
                              "turn_detection": {"type": "server_vad"}}}}}))
                step = 24000 * 2 * 40 // 1000
                start = time.monotonic()
                sent = 0
                for pcm in turns:
                    for i in range(0, len(pcm), step):
                        sent += min(step, len(pcm) - i)
                        await asyncio.sleep(max(0.0, start + sent / 48000 - time.monotonic()))
                        await ws.send(append(pcm[i:i + step]))
                done = 0
                while done < REALTIME_TURNS:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if event["type"].endswith("transcription.completed"):
                        done += 1
                        tally.ok += 1
                    elif event["type"].endswith("transcription.failed") or event["type"] == "error":
                        code = (event.get("error") or {}).get("code")
                        done += event["type"].endswith("failed")
                        if code in ("insufficient_quota", "rate_limit_exceeded", "queue_full"):
                            tally.refused += 1
                        else:
                            tally.samples.append(json.dumps(event)[:160])
                            tally.server_errors += event["type"].endswith("failed")
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            tally.failed(exc)

    await asyncio.gather(*(session(i * 0.7) for i in range(REALTIME_SESSIONS)))


async def wyoming_path(port: int, tally: PathTally) -> None:
    """``WYOMING_CLIENTS`` Home Assistant-like clients at once: a transcription, then a synthesis each."""
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.error import Error
    from wyoming.tts import Synthesize

    pcm = (np.clip(speech_16k(SENTENCES[0]), -1, 1) * 32767).astype("<i2").tobytes()

    async def until(client: AsyncTcpClient, kind: str) -> str:
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if event is None:
                raise ConnectionError("closed")
            if Error.is_type(event.type):
                return "error:" + str(event.data)
            if event.type == kind:
                return Transcript.from_event(event).text if kind == "transcript" else kind

    async def one() -> None:
        for action in ("stt", "tts"):
            tally.sent += 1
            try:
                async with AsyncTcpClient("127.0.0.1", port) as client:
                    if action == "stt":
                        await client.write_event(Transcribe(language="en").event())
                        await client.write_event(AudioStart(rate=16000, width=2, channels=1).event())
                        for i in range(0, len(pcm), 2048):
                            await client.write_event(AudioChunk(rate=16000, width=2, channels=1,
                                                                audio=pcm[i:i + 2048]).event())
                        await client.write_event(AudioStop().event())
                        answer = await until(client, "transcript")
                    else:
                        await client.write_event(Synthesize(text=SENTENCES[1]).event())
                        answer = await until(client, "audio-stop")
                if answer.startswith("error:"):
                    tally.refused += "quota" in answer or "busy" in answer or "rate" in answer
                    tally.samples.append(answer[:160])
                else:
                    tally.ok += 1
            except (OSError, TimeoutError, ConnectionError) as exc:
                tally.failed(exc)

    await asyncio.gather(*(one() for _ in range(WYOMING_CLIENTS)))


async def batch_path(url: str, key: str, tally: PathTally) -> None:
    """A batch of ``BATCH_LINES`` speech lines: every line must end, completed or failed, in the batch's files."""
    lines = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/audio/speech",
              "body": {"model": "tts-1", "input": SENTENCES[i % len(SENTENCES)], "voice": "alloy",
                       "response_format": "wav"}} for i in range(BATCH_LINES)]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    headers = {"Authorization": f"Bearer {key}"}
    tally.sent += BATCH_LINES
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as client:
            made = (await client.post("/v1/files", data={"purpose": "batch"},
                                      files={"file": ("lines.jsonl", body)})).json()
            batch = (await client.post("/v1/batches", json={"input_file_id": made["id"], "endpoint": "/v1/audio/speech",
                                                            "completion_window": "24h"})).json()
            deadline = time.monotonic() + 600
            while batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"batch {batch['id']} still {batch['status']}")
                await asyncio.sleep(1.0)
                batch = (await client.get(f"/v1/batches/{batch['id']}")).json()
            counts = batch.get("request_counts") or {}
            tally.ok += int(counts.get("completed", 0))
            failed = int(counts.get("failed", 0))
            tally.refused += failed
            missing = BATCH_LINES - int(counts.get("completed", 0)) - failed
            tally.lost += max(0, missing)
            if batch["status"] != "completed":
                tally.samples.append(f"batch ended {batch['status']}: {json.dumps(batch)[:120]}")
    except (httpx.HTTPError, TimeoutError, KeyError) as exc:
        tally.failed(exc)


def print_paths(tallies: dict[str, PathTally]) -> None:
    head = (f"{'path':<14} {'sent':>5} {'ok':>5} {'429':>5} {'5xx':>4} {'lost':>4} "
            f"{'overshoot s':>12} {'one request s':>14}")
    print("\nPaths beside the HTTP mix")
    print(head)
    print("-" * len(head))
    for name, t in tallies.items():
        over = f"{t.overshoot_s:>12.1f}" if name == "quota keys" else f"{'':>12}"
        bound = f"{t.largest_s:>14.1f}" if name == "quota keys" else f"{'':>14}"
        print(f"{name:<14} {t.sent:>5} {t.ok:>5} {t.refused:>5} {t.server_errors:>4} {t.lost:>4} {over} {bound}")
    for name, t in tallies.items():
        for sample in t.samples[:4]:
            print(f"  {name}: {sample}")


def key_env(data_dir: str) -> dict[str, str]:
    return {**os.environ, "HARMONY_DATA_DIR": data_dir}


async def run_paths(url: str, wyoming_port: int, admin: str, quota_keys: list[dict[str, Any]]) -> dict[str, PathTally]:
    """Every path at once, beside whatever else runs."""
    tallies = {name: PathTally() for name in ("quota keys", "realtime", "wyoming", "batch")}
    await asyncio.gather(quota_path(url, admin, quota_keys, tallies["quota keys"]),
                         realtime_path(url, admin, tallies["realtime"]),
                         wyoming_path(wyoming_port, tallies["wyoming"]),
                         batch_path(url, admin, tallies["batch"]))
    return tallies
