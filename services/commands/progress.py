"""The progress bar of a run of many jobs: items done, work done (audio seconds, characters), throughput, ETA.

Drawn with rich on stderr when it is a terminal; elsewhere (a log file, CI) one line per finished item and the
final state of the bar.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


@dataclass
class Units:
    """How a run counts: ``items`` ("files"), the work of each item, its rate, and how work amounts print."""
    verb: str  # the bar's label: "transcribing"
    items: str
    work: str
    rate: str
    seconds: bool = False  # work is audio seconds, shown as h:mm:ss

    def amount(self, value: float) -> str:
        return clock(value) if self.seconds else f"{int(value)}"


AUDIO = Units(verb="transcribing", items="files", work="audio", rate="audio s/s", seconds=True)
TEXT = Units(verb="speaking", items="paragraphs", work="characters", rate="chars/s")


@dataclass
class Tracker:
    """Counts items and work done; this run's throughput counts only work done now, not items skipped."""
    units: Units
    items_total: int
    work_total: float
    console: Console = field(default_factory=lambda: Console(stderr=True))
    items_done: int = 0
    items_failed: int = 0
    work_done: float = 0.0
    work_done_now: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[stats]}"),
                                 TimeElapsedColumn(), console=self.console)
        self.task = self.progress.add_task(self.units.verb, total=max(self.work_total, 1e-9), stats=self.stats())

    def __enter__(self) -> Tracker:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def throughput(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.work_done_now / elapsed if elapsed > 0 else 0.0

    def stats(self) -> str:
        u = self.units
        failed = f" ({self.items_failed} failed)" if self.items_failed else ""
        parts = [f"{u.items} {self.items_done}/{self.items_total}{failed}",
                 f"{u.work} {u.amount(self.work_done)}/{u.amount(self.work_total)}"]
        rate = self.throughput()
        if rate > 0:
            parts.append(f"{rate:.1f} {u.rate}")
            parts.append(f"ETA {clock(max(self.work_total - self.work_done, 0.0) / rate)}")
        return " | ".join(parts)

    def finished(self, work: float, *, skipped: bool = False, failed: bool = False, line: str | None = None) -> None:
        self.items_done += 1
        self.items_failed += failed
        self.work_done += work
        if not skipped:
            self.work_done_now += work
        self.progress.update(self.task, completed=self.work_done, stats=self.stats())
        if line:
            self.progress.console.print(line, highlight=False)
