"""``harmony speak``: a script to speech, one numbered file per paragraph (``0001.mp3``, ...), resumable.

A paragraph's file is kept on the next run only while its text, voice, model, format and speed are the same
(their digest sits in ``.harmony-speak.json`` in the output folder): edit paragraph 7 and only ``0007`` is redone.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
from pathlib import Path

from services.commands.connection import add_server_arguments, async_client, server_url
from services.commands.jobs import Job, print_summary, run_jobs
from services.commands.outputs import stream_atomically, write_atomically
from services.commands.progress import TEXT, Tracker

FORMATS = ["mp3", "wav", "flac", "opus", "aac", "pcm"]
MANIFEST = ".harmony-speak.json"


def add_parser(commands) -> None:
    p = commands.add_parser("speak", help="speak a script: one numbered audio file per paragraph",
                            description="Speak each paragraph of a text file (paragraphs are separated by blank "
                                        "lines) into 0001.mp3, 0002.mp3, ...; a second run redoes only the "
                                        "missing or changed paragraphs.")
    p.add_argument("script", type=Path, metavar="SCRIPT.txt")
    p.add_argument("--voice", default="alloy", help="voice (an OpenAI name or a Harmony voice id; default alloy)")
    p.add_argument("--model", default="tts-1", help="speech model (default tts-1)")
    p.add_argument("--format", default="mp3", choices=FORMATS, help="audio format (default mp3)")
    p.add_argument("--speed", type=float, help="0.25 to 4.0 (default 1.0)")
    p.add_argument("--out", metavar="DIR", type=Path,
                   help="folder of the numbered files (default: a folder named after the script, beside it)")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="paragraphs spoken at once (default 2)")
    add_server_arguments(p)
    p.set_defaults(handler=run)


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each with its lines joined by single spaces; empty ones dropped."""
    blocks = re.split(r"\n[ \t\r\f\v]*\n", text.replace("\r\n", "\n"))
    return [" ".join(block.split()) for block in blocks if block.strip()]


def default_out(script: Path) -> Path:
    return script.with_suffix("") if script.suffix else script.with_name(script.name + "-speech")


def digest(args: argparse.Namespace, text: str) -> str:
    key = json.dumps([text, args.voice, args.model, args.format, args.speed])
    return hashlib.sha256(key.encode()).hexdigest()


def _load_manifest(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _request(client, args: argparse.Namespace, text: str, output: Path, manifest: dict[str, str]):
    extra = {"speed": args.speed} if args.speed is not None else {}

    async def send() -> None:
        async with client.audio.speech.with_streaming_response.create(
                model=args.model, voice=args.voice, input=text, response_format=args.format, **extra) as response:
            await stream_atomically(output, response.iter_bytes())
        manifest[output.name] = digest(args, text)
        write_atomically(output.parent / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())

    return send


def _jobs(args: argparse.Namespace, texts: list[str], folder: Path, client) -> list[Job]:
    manifest = _load_manifest(folder)
    width = max(4, len(str(len(texts))))
    jobs = []
    for number, text in enumerate(texts, 1):
        output = folder / f"{number:0{width}d}.{args.format}"
        done = output.exists() and manifest.get(output.name) == digest(args, text)
        jobs.append(Job(label=f"paragraph {number}", output=output, work=len(text), done=done,
                        run=_request(client, args, text, output, manifest)))
    return jobs


async def _speak(args: argparse.Namespace, texts: list[str], folder: Path, base_url: str, api_key: str) -> int:
    async with async_client(base_url, api_key) as client:
        jobs = _jobs(args, texts, folder, client)
        with Tracker(TEXT, items_total=len(jobs), work_total=sum(j.work for j in jobs)) as tracker:
            outcome = await run_jobs(jobs, args.jobs, tracker)
    work = f"{int(outcome.work_done)} characters ({outcome.rate():.0f} chars/s)"
    return print_summary(outcome, "paragraphs", "spoke", work)


def run(args: argparse.Namespace) -> int:
    try:
        texts = paragraphs(args.script.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"harmony speak: {args.script}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    if not texts:
        print(f"harmony speak: {args.script}: no text to speak", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("harmony speak: --jobs must be at least 1", file=sys.stderr)
        return 2
    folder = args.out or default_out(args.script)
    with server_url(args) as (base_url, api_key):
        return asyncio.run(_speak(args, texts, folder, base_url, api_key))
