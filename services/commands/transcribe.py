"""``harmony transcribe``: files, folders and globs of audio or video to transcripts, a few at a time, resumable;
``--diarize`` names who spoke (speaker labels in srt, vtt and txt; known speakers with ``--speakers``)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import mimetypes
import sys
from pathlib import Path
from typing import Any

from services.commands.connection import add_server_arguments, async_client, server_url
from services.commands.inputs import BadPaths, Input, find_inputs
from services.commands.jobs import Job, print_summary, run_jobs
from services.commands.media import duration_seconds, upload_of
from services.commands.outputs import output_paths, write_atomically
from services.commands.progress import AUDIO, Tracker, clock

# --format -> (the API's response_format, the result's extension)
FORMATS = {"txt": ("text", ".txt"), "srt": ("srt", ".srt"), "vtt": ("vtt", ".vtt"), "json": ("json", ".json"),
           "verbose_json": ("verbose_json", ".verbose.json"), "diarized_json": ("diarized_json", ".diarized.json")}
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"
STDOUT = Path("-")
MAX_REFERENCE_BYTES = 10 * 1024 * 1024  # a 2-10 s reference is far smaller; a larger file is no reference


class BadArguments(Exception):
    """Options that cannot make a request: the message says which and why (exit status 2)."""


def add_parser(commands) -> None:
    p = commands.add_parser("transcribe", help="transcribe files, folders and globs of audio or video",
                            description="Transcribe audio and video files (folders are searched recursively). "
                                        "Each result is written next to its input, or under --out; a second run "
                                        "skips the files already done.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a file, a folder or a glob (quote it: 'talks/**/*.mp3')")
    p.add_argument("--model", help=f"transcription model (default whisper-1; with --diarize {DIARIZE_MODEL})")
    p.add_argument("--format", default="txt", choices=list(FORMATS), help="result format (default txt)")
    p.add_argument("--out", metavar="DIR", type=Path, help="write results under DIR, keeping relative folders")
    p.add_argument("-o", "--output", metavar="FILE", type=Path,
                   help="write the one input's result to FILE ('-': standard output), always (no skipping)")
    p.add_argument("--language", metavar="L", help="the language spoken (ISO 639-1, e.g. en); default: detected")
    p.add_argument("--prompt", help="text to guide the model's style or spelling of names")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="files sent at once (default 2)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, metavar="MB",
                   help="larger files are sent as 16 kHz mono Opus (default 25, the server's default limit)")
    add_diarize_arguments(p)
    add_server_arguments(p)
    p.set_defaults(handler=run)


def add_diarize_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("who spoke when")
    d.add_argument("--diarize", action="store_true",
                   help=f"label each speaker ({DIARIZE_MODEL}): 'A: ...' in srt and txt, <v A> in vtt")
    d.add_argument("--speakers", action="append", default=[], metavar="NAME=REF",
                   help="a known speaker (repeatable, up to 4): REF is a 2-10 s recording of them or the id of a "
                        "registered voice (voice_...); their turns are labelled NAME")
    d.add_argument("--min-speakers", type=int, metavar="N", help="at least N speakers")
    d.add_argument("--max-speakers", type=int, metavar="N", help="at most N speakers")


def _reference(name: str, ref: str) -> str:
    """A known speaker's reference as the API takes it: a registered voice's id, or the file as a data URL."""
    if ref.startswith("voice_"):
        return ref
    path = Path(ref).expanduser()
    if not path.is_file():
        raise BadArguments(f"--speakers {name}={ref}: no such file (give a 2-10 s recording or a voice_... id)")
    if path.stat().st_size > MAX_REFERENCE_BYTES:
        raise BadArguments(f"--speakers {name}={ref}: too large for a 2-10 s reference")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{media};base64," + base64.b64encode(path.read_bytes()).decode()


def diarize_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The diarize model's fields of every request (known speakers read once), or {} without --diarize."""
    asked = args.speakers or args.min_speakers is not None or args.max_speakers is not None
    if not args.diarize:
        if asked:
            raise BadArguments("--speakers, --min-speakers and --max-speakers need --diarize")
        return {}
    names, refs = [], []
    for item in args.speakers:
        name, sep, ref = item.partition("=")
        if not sep or not name.strip() or not ref:
            raise BadArguments(f"--speakers {item!r}: write NAME=REF (a recording or a voice_... id)")
        names.append(name.strip())
        refs.append(_reference(name.strip(), ref))
    fields: dict[str, Any] = {"chunking_strategy": "auto"}  # the diarize model needs it for recordings over 30 s
    if names:
        fields |= {"known_speaker_names": names, "known_speaker_references": refs}
    extra = {k: v for k, v in (("min_speakers", args.min_speakers), ("max_speakers", args.max_speakers))
             if v is not None}
    return fields | ({"extra_body": extra} if extra else {})


def labelled_text(body: bytes) -> bytes:
    """A diarized answer as text: one line per turn, ``SPEAKER: words`` (a speaker's consecutive segments
    joined)."""
    lines: list[list[str]] = []
    for segment in json.loads(body)["segments"]:
        text = " ".join(segment["text"].split())
        if lines and lines[-1][0] == segment["speaker"]:
            lines[-1][1] = f"{lines[-1][1]} {text}".strip()
        else:
            lines.append([segment["speaker"], text])
    return "".join(f"{speaker}: {text}\n" for speaker, text in lines).encode()


def _write(output: Path, data: bytes) -> None:
    if output == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomically(output, data)


def _request(client, args: argparse.Namespace, item: Input, output: Path, diarize: dict[str, Any]):
    response_format = FORMATS[args.format][0]
    labelled = bool(diarize) and args.format == "txt"  # speakers' labels: asked as diarized_json, written as text
    extra = {k: v for k, v in (("language", args.language), ("prompt", args.prompt)) if v}

    async def send() -> None:
        upload = await asyncio.to_thread(upload_of, item.path, int(args.max_upload_mb * 1024 * 1024))
        raw = await client.audio.transcriptions.with_raw_response.create(
            model=args.model, file=upload, response_format="diarized_json" if labelled else response_format,
            **extra, **diarize)
        await asyncio.to_thread(_write, output, labelled_text(raw.content) if labelled else raw.content)

    return send


def _outputs(args: argparse.Namespace, inputs: list[Input]) -> dict[Input, Path]:
    if args.output is None:
        return output_paths(inputs, FORMATS[args.format][1], args.out)
    if len(inputs) != 1 or args.out is not None:
        raise BadArguments(f"--output takes one input ({len(inputs)} found) and no --out: use --out DIR for many")
    return {inputs[0]: args.output}


async def _jobs(args: argparse.Namespace, inputs: list[Input], client, diarize: dict[str, Any]) -> list[Job]:
    outputs = _outputs(args, inputs)
    durations = await asyncio.gather(*(asyncio.to_thread(duration_seconds, item.path) for item in inputs))
    return [Job(label=str(item.path), output=outputs[item], work=seconds,
                run=_request(client, args, item, outputs[item], diarize),
                done=args.output is None and outputs[item].exists())
            for item, seconds in zip(inputs, durations)]


async def _transcribe(args: argparse.Namespace, inputs: list[Input], base_url: str, api_key: str,
                      diarize: dict[str, Any]) -> int:
    client = async_client(base_url, api_key)
    async with client:
        jobs = await _jobs(args, inputs, client, diarize)
        with Tracker(AUDIO, items_total=len(jobs), work_total=sum(j.work for j in jobs)) as tracker:
            outcome = await run_jobs(jobs, args.jobs, tracker)
    work = f"{clock(outcome.work_done)} of audio ({outcome.rate():.1f} audio s/s)"
    with contextlib.redirect_stdout(sys.stderr) if args.output == STDOUT else contextlib.nullcontext():
        return print_summary(outcome, "files", "transcribed", work)


def _checked(args: argparse.Namespace) -> tuple[list[Input], dict[str, Any]]:
    """The inputs and the diarize fields; BadPaths or BadArguments before anything is sent."""
    inputs = find_inputs(args.paths)
    if args.jobs < 1:
        raise BadArguments("--jobs must be at least 1")
    diarize = diarize_fields(args)
    args.model = args.model or (DIARIZE_MODEL if args.diarize else "whisper-1")
    _outputs(args, inputs)
    return inputs, diarize


def run(args: argparse.Namespace) -> int:
    try:
        inputs, diarize = _checked(args)
    except BadPaths as exc:
        for problem in exc.problems:
            print(f"harmony transcribe: {problem}", file=sys.stderr)
        return 2
    except BadArguments as exc:
        print(f"harmony transcribe: {exc}", file=sys.stderr)
        return 2
    with server_url(args) as (base_url, api_key):
        return asyncio.run(_transcribe(args, inputs, base_url, api_key, diarize))
