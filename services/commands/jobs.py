"""Run many jobs, a few at a time: done ones skipped, failures reported and the rest carried on, a summary."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape

from services.commands.progress import Tracker, clock


@dataclass
class Job:
    label: str                            # what messages call it (the input's path, "paragraph 3")
    output: Path
    work: float                           # audio seconds, characters
    run: Callable[[], Awaitable[None]]    # does the request and writes ``output``
    done: bool = False                    # its output exists already: skipped


@dataclass
class Outcome:
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    work_done: float = 0.0  # the work of the jobs done in this run

    def rate(self) -> float:
        return self.work_done / self.seconds if self.seconds > 0 else 0.0


def describe_error(exc: BaseException) -> str:
    """One line for a failed request: the server's OpenAI-shaped message when there is one."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error", body) if isinstance(body, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        return f"HTTP {exc.status_code}: {message or exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"cannot reach the server: {cause or exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _one(job: Job, limit: asyncio.Semaphore, tracker: Tracker, outcome: Outcome, display: Callable) -> None:
    async with limit:
        try:
            await job.run()
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # one failed item is reported; the others go on
            message = describe_error(exc)
            outcome.failed.append((job.label, message))
            tracker.finished(0.0, failed=True, line=f"[red]failed[/red] {escape(job.label)}: {escape(message)}")
            return
    outcome.done += 1
    outcome.work_done += job.work
    tracker.finished(job.work, line=escape(f"done {job.label} -> {display(job.output)}"))


async def run_jobs(jobs: list[Job], parallel: int, tracker: Tracker, display: Callable[[Path], str] = str) -> Outcome:
    """Skip the jobs already done, run the others ``parallel`` at a time under ``tracker``."""
    outcome, started = Outcome(), time.monotonic()
    for job in jobs:
        if job.done:
            outcome.skipped += 1
            tracker.finished(job.work, skipped=True)
    limit = asyncio.Semaphore(max(1, parallel))
    await asyncio.gather(*(_one(job, limit, tracker, outcome, display) for job in jobs if not job.done))
    outcome.seconds = time.monotonic() - started
    return outcome


def print_summary(outcome: Outcome, noun: str, verb: str, work: str) -> int:
    """The summary line (and each failure again); the exit status: 1 if any job failed."""
    total = outcome.done + outcome.skipped + len(outcome.failed)
    print(f"{verb} {outcome.done}, skipped {outcome.skipped} (already done), failed {len(outcome.failed)} "
          f"of {total} {noun}; {work} in {clock(outcome.seconds)}", flush=True)
    for label, message in outcome.failed:
        print(f"  failed: {label}: {message}", flush=True)
    return 1 if outcome.failed else 0
