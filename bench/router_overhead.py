"""What the router adds to a request: the same cheap requests on kept-alive connections, straight to the
model service and through the router, p50/p95 side by side, on `harmony serve` with one VAD model.

    python -m bench.router_overhead [--requests 300] [--code DIR] [--against DIR] [--traced]

``--code`` runs the engine from another checkout (e.g. a worktree of an older commit) to compare against:
its services may listen on loopback TCP ports (printed at start) or on Unix sockets (found among the
process's sockets). The rows:

- ``GET /v1/models``: answered by the router itself, or by the service itself: one server, no hop.
- ``GET /readyz``: the router asks the service's ``/readyz``: the cheapest request that crosses the hop.
- ``POST /v1/audio/vad`` (0.2 s of silence, batches of one): through the router it is two servers, the
  router parsing the upload and forwarding it to the service.

``router hop`` is the p50 through the router less the p50 direct: what the router and its connection to
the service add.

``--against DIR`` measures a second engine (an older checkout: ``git archive COMMIT | tar -x -C DIR``) right after,
and prints both router hops side by side: tracing off must cost nothing (services/core/runtime/tracing.py).
``--traced`` runs the engine (``--code``) with tracing on, its spans exported over OTLP/HTTP to a receiver here
that discards them.

Before TCP_NODELAY, every request on a kept-alive connection waited about 40 ms for the ACK of its
response's first write (Nagle against delayed ACK); through the router it paid that twice.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from services.core.http.service_url import sync_client, unix_url
from tests.servers import free_port
from tests.speech import silence, wav_bytes

VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
       "batching": {"max_batch_size": 1, "max_queue_delay_ms": 0}}
ROOT = Path(__file__).resolve().parents[1]
BLOCK = 25


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start(code: Path, workdir: Path, otlp: str | None = None) -> tuple[subprocess.Popen, str]:
    config = workdir / "serve.yaml"
    config.write_text(yaml.safe_dump({"models": [VAD], "data_dir": str(workdir / "data")}))
    port, ready, log = free_port(), workdir / "ready", workdir / "serve.log"
    env = {**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{code / 'operator'}"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    if otlp:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--config", str(config), "--port",
                                str(port), "--ready-file", str(ready), "--log-level", "warning"],
                               cwd=code, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"harmony serve did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return process, f"http://127.0.0.1:{port}"


def service_url(process: subprocess.Popen, log: Path) -> str:
    """The VAD service: its loopback port as older versions printed it, else its Unix socket."""
    printed = re.search(r"vad service: (http://\S+)", log.read_text(errors="replace"))
    if printed:
        return printed.group(1)
    import psutil

    engine = psutil.Process(process.pid)
    listing = engine.net_connections if hasattr(engine, "net_connections") else engine.connections  # psutil < 6
    sockets = {c.laddr for c in listing(kind="unix") if c.laddr}
    return unix_url(next(path for path in sockets if path.endswith("/vad.sock")))


def timed(clients: dict[str, httpx.Client], request: dict, count: int) -> dict[str, list[float]]:
    """``count`` requests on each client, back to back on its connection as a client's burst would be, in blocks
    of ``BLOCK`` taking turns between the clients, so that both meet the same machine load. (Alternating single
    requests would hide Nagle's delay: a connection idle in between gets its ACKs at once.)"""
    for client in clients.values():
        for _ in range(20):  # warm-up: connections open, code paths hot
            client.request(**request).raise_for_status()
    times: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(0, count, BLOCK):
        for name, client in clients.items():
            for _ in range(BLOCK):
                started = time.perf_counter()
                response = client.request(**request)
                times[name].append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
    return times


def measure(router: str, service: str, count: int) -> dict[str, dict[str, list[float]]]:
    audio = wav_bytes(silence(0.2, 16000), 16000)
    requests = {"GET /v1/models": {"method": "GET", "url": "/v1/models"},
                "GET /readyz": {"method": "GET", "url": "/readyz"},
                "POST /v1/audio/vad": {"method": "POST", "url": "/v1/audio/vad",
                                       "files": {"file": ("a.wav", audio, "audio/wav")}}}
    with sync_client(service, timeout=60) as direct, httpx.Client(base_url=router, timeout=60) as routed:
        return {name: timed({"direct": direct, "router": routed}, request, count) for name, request in requests.items()}


def report(results: dict[str, dict[str, list[float]]], label: str) -> None:
    print(f"\n{label}")
    print(f"{'request':<22}{'direct p50':>12}{'p95':>9}{'router p50':>13}{'p95':>9}{'router hop p50':>17}")
    for name, times in results.items():
        d50, d95 = percentile(times["direct"], 0.5), percentile(times["direct"], 0.95)
        r50, r95 = percentile(times["router"], 0.5), percentile(times["router"], 0.95)
        hop = "(no hop)" if name == "GET /v1/models" else f"{r50 - d50:.2f} ms"
        print(f"{name:<22}{d50:>9.2f} ms{d95:>6.2f} ms{r50:>10.2f} ms{r95:>6.2f} ms{hop:>17}")


def run_engine(code: Path, count: int, otlp: str | None = None) -> dict[str, dict[str, list[float]]]:
    workdir = Path(tempfile.mkdtemp(prefix="harmony-bench-"))
    process, router = start(code.resolve(), workdir, otlp)
    try:
        return measure(router, service_url(process, workdir / "serve.log"), count)
    finally:
        process.terminate()
        process.wait(timeout=60)


def discarding_receiver() -> str:
    """An OTLP/HTTP endpoint on loopback that accepts every export and keeps nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Discard(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Discard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def hops(results: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    return {name: percentile(t["router"], 0.5) - percentile(t["direct"], 0.5) for name, t in results.items()
            if name != "GET /v1/models"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose engine runs (default: this one)")
    parser.add_argument("--against", type=Path, help="a second checkout, measured after it and compared")
    parser.add_argument("--traced", action="store_true", help="tracing on (OTLP to a discarding receiver here)")
    args = parser.parse_args()
    results = run_engine(args.code, args.requests, discarding_receiver() if args.traced else None)
    other = run_engine(args.against, args.requests) if args.against else None
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.requests} requests each, "
          f"one kept-alive connection per column, one request at a time, "
          f"the columns taking turns in blocks of {BLOCK}")
    report(results, f"engine: {args.code} ({_commit(args.code)}), tracing {'on' if args.traced else 'off'}")
    if other is not None:
        report(other, f"against: {args.against} ({_commit(args.against)}), tracing off")
        print(f"\n{'router hop p50':<22}{'engine':>12}{'against':>12}")
        for name, hop in hops(results).items():
            print(f"{name:<22}{hop:>9.2f} ms{hops(other)[name]:>9.2f} ms")


def _commit(code: Path) -> str:
    found = subprocess.run(["git", "-C", str(code), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return found.stdout.strip()[:70] if found.returncode == 0 else "not a git checkout"


if __name__ == "__main__":
    main()
