"""Wyoming (Home Assistant) latency: from the end of a spoken command to its transcript, and from a synthesize to
its first audio, through ``harmony serve --wyoming-port`` with the wyoming client library.

    python -m bench.wyoming [--rounds 10] [--no-pace]

Each command is Piper speech followed by 0.8 s of silence (what Home Assistant's VAD leaves before it ends the
stream), sent as 16 kHz 16-bit chunks of 20 ms at the pace a microphone makes them (``--no-pace``: at once). The
latency is measured from the audio-stop the client sends to the transcript it receives; one client at a time;
with early decoding (``wyoming.early_decode_ms``: 300, the default) and without (0), each in its own engine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soxr
import yaml
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice

from tests.harmony_process import HarmonyProcess
from tests.servers import free_port
from tests.speech import normalize, synthesize

COMMANDS = ["Turn on the kitchen lights.", "What is the weather like tomorrow?", "Set a timer for ten minutes.",
            "Play some music in the living room.", "Lock the front door."]
REPLY = "The kitchen lights are on."
TRAILING_SILENCE_S = 0.8
CHUNK_S = 0.02
RATE = 16000


def command_pcm(text: str) -> bytes:
    audio, rate = synthesize(text)
    audio = np.concatenate([soxr.resample(audio, rate, RATE), np.zeros(int(TRAILING_SILENCE_S * RATE), np.float32)])
    return (np.clip(audio, -1, 1) * 32767 * 0.5).astype("<i2").tobytes()


async def transcribe_once(port: int, pcm: bytes, model: str | None, pace: bool) -> tuple[float, str]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(name=model, language="en").event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())
        step = int(CHUNK_S * RATE) * 2
        began = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm), step)):
            chunk = AudioChunk(rate=RATE, width=2, channels=1, audio=pcm[offset:offset + step])
            await client.write_event(chunk.event())
            if pace:
                await asyncio.sleep(max(0.0, began + (index + 1) * CHUNK_S - time.monotonic()))
        stopped = time.monotonic()
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            assert event is not None and event.type != "error", event
            if Transcript.is_type(event.type):
                return time.monotonic() - stopped, Transcript.from_event(event).text


async def speak_once(port: int) -> tuple[float, float]:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        began = time.monotonic()
        await client.write_event(Synthesize(text=REPLY, voice=SynthesizeVoice(name="joe")).event())
        first = None
        while True:
            event = await client.read_event()
            assert event is not None and event.type != "error", event
            if event.type == "audio-chunk" and first is None:
                first = time.monotonic() - began
            if event.type == "audio-stop":
                return first or 0.0, time.monotonic() - began


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:6.0f} ms  p95 {p95 * 1000:6.0f} ms"


async def measure_stt(port: int, rounds: int, pace: bool, early_ms: int) -> None:
    clips = [(text, command_pcm(text)) for text in COMMANDS]
    for model in (None, "whisper-base"):
        await transcribe_once(port, clips[0][1], model, pace=False)  # warm up
        latencies, misheard = [], 0
        for index in range(rounds):
            text, pcm = clips[index % len(clips)]
            seconds, heard = await transcribe_once(port, pcm, model, pace)
            latencies.append(seconds)
            misheard += normalize(heard) != normalize(text)
        label = f"{model or 'auto (en: tiny.en)'}, early {early_ms} ms"
        print(f"end of audio -> transcript, {label:34s} {summary(latencies)}  ({misheard}/{rounds} not word-exact)")


async def measure_tts(port: int, rounds: int) -> None:
    await speak_once(port)
    firsts, wholes = zip(*[await speak_once(port) for _ in range(rounds)])
    print(f"synthesize -> first audio-chunk, joe {'':27s}{summary(list(firsts))}")
    print(f"synthesize -> audio-stop, joe {'':34s}{summary(list(wholes))}")


def engine(early_ms: int) -> tuple[HarmonyProcess, int]:
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "services/defaults/serve.yaml").read_text())
    config["models"] = [m for m in config["models"] if m["name"] in ("whisper-base", "whisper-tiny.en",
                                                                      "piper-en-joe")]
    config["routes"] = []
    config["wyoming"] = {"early_decode_ms": early_ms}
    path = Path(tempfile.mkdtemp()) / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    return HarmonyProcess(config=str(path), extra_args=["--wyoming-port", str(port)]).start(), port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--no-pace", action="store_true", help="send the audio at once, not in real time")
    args = parser.parse_args()
    for early_ms in (300, 0):  # early decoding on (the default), then off
        process, port = engine(early_ms)
        try:
            asyncio.run(measure_stt(port, args.rounds, pace=not args.no_pace, early_ms=early_ms))
            if early_ms:
                asyncio.run(measure_tts(port, args.rounds))
        finally:
            process.stop()


if __name__ == "__main__":
    main()
