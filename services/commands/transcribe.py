"""``harmony transcribe``: files, folders and globs of audio or video to transcripts, a few at a time, resumable."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.commands.connection import add_server_arguments, async_client, server_url
from services.commands.inputs import BadPaths, Input, find_inputs
from services.commands.jobs import Job, print_summary, run_jobs
from services.commands.media import duration_seconds, upload_of
from services.commands.outputs import output_paths, write_atomically
from services.commands.progress import AUDIO, Tracker, clock

# --format -> (the API's response_format, the result's extension)
FORMATS = {"txt": ("text", ".txt"), "srt": ("srt", ".srt"), "vtt": ("vtt", ".vtt"), "json": ("json", ".json"),
           "verbose_json": ("verbose_json", ".verbose.json")}


def add_parser(commands) -> None:
    p = commands.add_parser("transcribe", help="transcribe files, folders and globs of audio or video",
                            description="Transcribe audio and video files (folders are searched recursively). "
                                        "Each result is written next to its input, or under --out; a second run "
                                        "skips the files already done.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a file, a folder or a glob (quote it: 'talks/**/*.mp3')")
    p.add_argument("--model", default="whisper-1", help="transcription model (default whisper-1)")
    p.add_argument("--format", default="txt", choices=list(FORMATS), help="result format (default txt)")
    p.add_argument("--out", metavar="DIR", type=Path, help="write results under DIR, keeping relative folders")
    p.add_argument("--language", metavar="L", help="the language spoken (ISO 639-1, e.g. en); default: detected")
    p.add_argument("--prompt", help="text to guide the model's style or spelling of names")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="files sent at once (default 2)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB",
                   help="larger files are sent as 16 kHz mono Opus (default 25, the server's default limit)")
    add_server_arguments(p)
    p.set_defaults(handler=run)


def _request(client, args: argparse.Namespace, item: Input, output: Path):
    response_format = FORMATS[args.format][0]
    extra = {k: v for k, v in (("language", args.language), ("prompt", args.prompt)) if v}

    async def send() -> None:
        upload = await asyncio.to_thread(upload_of, item.path, int(args.max_upload_mb * 1024 * 1024))
        raw = await client.audio.transcriptions.with_raw_response.create(
            model=args.model, file=upload, response_format=response_format, **extra)
        await asyncio.to_thread(write_atomically, output, raw.content)

    return send


async def _jobs(args: argparse.Namespace, inputs: list[Input], client) -> list[Job]:
    outputs = output_paths(inputs, FORMATS[args.format][1], args.out)
    durations = await asyncio.gather(*(asyncio.to_thread(duration_seconds, item.path) for item in inputs))
    return [Job(label=str(item.path), output=outputs[item], work=seconds, run=_request(client, args, item,
                                                                                       outputs[item]),
                done=outputs[item].exists())
            for item, seconds in zip(inputs, durations)]


async def _transcribe(args: argparse.Namespace, inputs: list[Input], base_url: str, api_key: str) -> int:
    client = async_client(base_url, api_key)
    async with client:
        jobs = await _jobs(args, inputs, client)
        with Tracker(AUDIO, items_total=len(jobs), work_total=sum(j.work for j in jobs)) as tracker:
            outcome = await run_jobs(jobs, args.jobs, tracker)
    work = f"{clock(outcome.work_done)} of audio ({outcome.rate():.1f} audio s/s)"
    return print_summary(outcome, "files", "transcribed", work)


def run(args: argparse.Namespace) -> int:
    try:
        inputs = find_inputs(args.paths)
    except BadPaths as exc:
        for problem in exc.problems:
            print(f"harmony transcribe: {problem}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("harmony transcribe: --jobs must be at least 1", file=sys.stderr)
        return 2
    with server_url(args) as (base_url, api_key):
        return asyncio.run(_transcribe(args, inputs, base_url, api_key))
