"""``harmony batch``: thin wrappers over OpenAI's Files and Batch API (the official SDK, any compatible server).

``submit`` uploads a JSONL file (``purpose="batch"``) and creates the batch; ``status`` prints it; ``wait``
polls it with a progress bar from ``request_counts`` until it ends; ``results`` downloads its output and error
files (and, for ``/v1/audio/speech``, the audio each output line names by file id); ``list`` and ``cancel``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.commands.connection import add_server_arguments, api_base, sync_client
from services.commands.jobs import describe_error
from services.commands.outputs import write_atomically

if TYPE_CHECKING:
    from openai import OpenAI
    from rich.progress import Progress

ENDPOINTS = ["/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech"]
FINAL = {"completed", "failed", "cancelled", "expired"}


def add_parser(commands) -> None:
    batch = commands.add_parser("batch", help="submit and follow jobs of OpenAI's Batch API",
                                description="Thin wrappers over the Files and Batch API of the server.")
    sub = batch.add_subparsers(dest="batch_command", required=True)

    def command(name: str, text: str, *, batch_id: bool = True, polls: bool = False) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=text, description=text)
        if batch_id:
            parser.add_argument("id", metavar="ID", help="the batch's id (batch_...)")
        if polls:
            parser.add_argument("--interval", type=float, default=5.0, metavar="S", help="seconds between polls")
            parser.add_argument("--timeout", type=float, metavar="S", help="give up waiting after S seconds")
        add_server_arguments(parser, embedded=False)
        return parser

    submit = command("submit", "upload a JSONL file of requests and create a batch; prints its id",
                     batch_id=False, polls=True)
    submit.add_argument("file", type=Path, metavar="FILE.jsonl")
    submit.add_argument("--endpoint", required=True, choices=ENDPOINTS)
    submit.add_argument("--completion-window", default="24h")
    submit.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--wait", action="store_true", help="then wait for it to end, with a progress bar")
    submit.add_argument("--out", type=Path, metavar="DIR", help="with --wait: download the results into DIR")
    command("status", "print a batch").add_argument("--json", action="store_true", help="the batch object as JSON")
    command("wait", "wait for a batch to end, with a progress bar from its request_counts", polls=True)
    results = command("results", "download a batch's output and error files (and the audio of speech lines)")
    results.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="where (default: here)")
    results.add_argument("--no-audio", action="store_true", help="not the audio files that speech lines name")
    command("cancel", "cancel a batch")
    command("list", "list recent batches", batch_id=False).add_argument("--limit", type=int, default=20)
    batch.set_defaults(handler=run)


def make_client(args: argparse.Namespace) -> OpenAI:
    return sync_client(api_base(args.server), args.api_key or "none")


def run(args: argparse.Namespace) -> int:
    if not args.server:
        print("harmony batch: give the server with --server URL or HARMONY_SERVER", file=sys.stderr)
        return 2
    import openai

    client = make_client(args)
    try:
        return COMMANDS[args.batch_command](client, args)
    except openai.APIError as exc:
        print(f"harmony batch: {describe_error(exc)}", file=sys.stderr)
        return 1


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    items = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    return items or None


def submit(client: OpenAI, args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"harmony batch: {args.file}: no such file", file=sys.stderr)
        return 2
    bad = [pair for pair in args.metadata if "=" not in pair]
    if bad:
        print(f"harmony batch: --metadata {bad[0]}: expected KEY=VALUE", file=sys.stderr)
        return 2
    with open(args.file, "rb") as handle:
        uploaded = client.files.create(file=(args.file.name, handle), purpose="batch")
    created = client.batches.create(input_file_id=uploaded.id, endpoint=args.endpoint,
                                    completion_window=args.completion_window, metadata=_metadata(args.metadata))
    print(f"submitted {args.file} ({uploaded.id}) as {created.id}: {created.status}", file=sys.stderr)
    print(created.id, flush=True)
    if not args.wait:
        return 0
    status = wait_for(client, created.id, args.interval, args.timeout)
    if args.out is not None and status in FINAL:
        download(client, client.batches.retrieve(created.id), args.out, audio=True)
    return 0 if status == "completed" else 1


def describe(batch) -> list[str]:
    counts = batch.request_counts
    completed, failed, total = (counts.completed, counts.failed, counts.total) if counts else (0, 0, 0)
    lines = [f"{batch.id}  {batch.status}  {batch.endpoint}",
             f"  requests: {completed} completed, {failed} failed, {total} in all"]
    for name in ("created_at", "in_progress_at", "finalizing_at", "completed_at", "failed_at", "cancelled_at",
                 "expired_at", "expires_at"):
        value = getattr(batch, name, None)
        if value:
            lines.append(f"  {name}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))}")
    for name in ("input_file_id", "output_file_id", "error_file_id"):
        if getattr(batch, name, None):
            lines.append(f"  {name}: {getattr(batch, name)}")
    for error in (batch.errors.data or []) if batch.errors else []:
        where = f" (line {error.line})" if error.line is not None else ""
        lines.append(f"  error{where}: {error.code}: {error.message}")
    return lines


def status(client: OpenAI, args: argparse.Namespace) -> int:
    batch = client.batches.retrieve(args.id)
    print(batch.model_dump_json(indent=2) if args.json else "\n".join(describe(batch)), flush=True)
    return 0


def _bar() -> Progress:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("requests, {task.fields[failed]} failed"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=Console(stderr=True))


def wait_for(client: OpenAI, batch_id: str, interval: float, timeout: float | None = None) -> str:
    """Poll the batch until it ends (or ``timeout`` passes), the bar following ``request_counts``; its status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with _bar() as bar:
        task = bar.add_task("validating", total=None, failed=0)
        while True:
            batch = client.batches.retrieve(batch_id)
            counts = batch.request_counts
            if counts is not None:
                bar.update(task, total=counts.total or None, completed=counts.completed + counts.failed,
                           failed=counts.failed)
            bar.update(task, description=f"{batch.id} {batch.status}")
            if batch.status in FINAL or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(interval)
    for line in describe(batch):
        print(line, file=sys.stderr)
    return batch.status


def wait(client: OpenAI, args: argparse.Namespace) -> int:
    final = wait_for(client, args.id, args.interval, args.timeout)
    if final not in FINAL:
        print(f"harmony batch: {args.id} is still {final} after {args.timeout:g} s", file=sys.stderr)
    return 0 if final == "completed" else 1


def _safe_name(custom_id: str) -> str:
    return re.sub(r"[^\w.-]+", "_", custom_id).strip("._") or "item"


def _audio_file_id(line: dict) -> str | None:
    """The file id a speech line's body carries (Harmony stores each answer's audio as a file)."""
    body = ((line.get("response") or {}).get("body")) or {}
    if not isinstance(body, dict):
        return None
    for key in ("file_id", "file", "id"):
        value = body.get(key)
        if isinstance(value, str) and value.startswith("file-"):
            return value
    return None


def _download_audio(client: OpenAI, output: bytes, folder: Path) -> int:
    saved = 0
    for raw in output.splitlines():
        line = json.loads(raw) if raw.strip() else {}
        file_id = _audio_file_id(line)
        if file_id is None:
            continue
        suffix = Path(client.files.retrieve(file_id).filename or "").suffix or ".audio"
        write_atomically(folder / f"{_safe_name(str(line.get('custom_id', file_id)))}{suffix}",
                         client.files.content(file_id).read())
        saved += 1
    return saved


def download(client: OpenAI, batch, folder: Path, *, audio: bool) -> int:
    """Write the batch's output and error files into ``folder`` (``<id>_output.jsonl``, ``<id>_errors.jsonl``),
    and the audio of speech lines (``<custom_id>.<format>``); the number of files written."""
    written = 0
    for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
        if not file_id:
            continue
        data = client.files.content(file_id).read()
        path = folder / f"{batch.id}_{kind}.jsonl"
        write_atomically(path, data)
        print(f"{path}: {len(data.splitlines())} lines", flush=True)
        written += 1
        if kind == "output" and audio and batch.endpoint == "/v1/audio/speech":
            saved = _download_audio(client, data, folder)
            print(f"{folder}: {saved} audio files", flush=True)
            written += saved
    return written


def results(client: OpenAI, args: argparse.Namespace) -> int:
    batch = client.batches.retrieve(args.id)
    if not (batch.output_file_id or batch.error_file_id):
        state = "has no results" if batch.status in FINAL else f"is still {batch.status} (harmony batch wait)"
        print(f"harmony batch: {batch.id} {state}", file=sys.stderr)
        return 1
    download(client, batch, args.out, audio=not args.no_audio)
    return 0


def cancel(client: OpenAI, args: argparse.Namespace) -> int:
    batch = client.batches.cancel(args.id)
    print(f"{batch.id}: {batch.status}", flush=True)
    return 0


def list_batches(client: OpenAI, args: argparse.Namespace) -> int:
    for batch in client.batches.list(limit=args.limit).data:
        counts = batch.request_counts
        done = f"{counts.completed + counts.failed}/{counts.total}" if counts else "-"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(batch.created_at))
        print(f"{batch.id}  {batch.status:<11} {done:>11}  {created}  {batch.endpoint}", flush=True)
    return 0


COMMANDS = {"submit": submit, "status": status, "wait": wait, "results": results, "cancel": cancel,
            "list": list_batches}
