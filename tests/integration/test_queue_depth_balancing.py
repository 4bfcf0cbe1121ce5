"""Pod choice by the queue depth the pods report: two real Silero VAD services, each its own process
(``python -m services.service_main``, as a model pod runs it), one kept busy by another client (another router, say),
which this router's own in-flight count cannot see. Every answer of a model service carries its depth
(``x-harmony-queue-depth``), so after one answer from the busy pod the router sends new requests to the idle one."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from services.core.contracts.specs import parse_config
from services.router.app import create_router_app
from services.router.routing import ModelTable
from tests.servers import ServerThread, free_port, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}
ADDRESSES = (f"127.0.0.{n}" for n in itertools.count(61))


class Pod:
    def __init__(self, model_file: Path, log_dir: Path) -> None:
        self.address = next(ADDRESSES)
        self.url = f"http://{self.address}:{free_port()}"
        self.log = log_dir / f"pod-{self.address}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.service_main", "--model-file", str(model_file), "--host",
                 self.address, "--port", self.url.rsplit(":", 1)[1], "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def served(self) -> float:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = r'harmony_http_requests_total\{[^}]*outcome="ok"[^}]*route="/v1/audio/vad"[^}]*\} (\S+)'
        return sum(float(v) for v in re.findall(pattern, text))


@pytest.fixture(scope="module")
def pods(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("depth")
    model_file = tmp / "model.yaml"
    model_file.write_text(yaml.safe_dump(VAD))
    started = [Pod(model_file, tmp) for _ in range(2)]
    try:
        for pod in started:
            wait_ready(pod.url, timeout=120)
        yield started
    finally:
        for pod in started:
            pod.proc.send_signal(signal.SIGKILL)
            pod.proc.wait(timeout=30)


class Busy:
    """Threads keeping ``url`` busy with long VAD requests, straight to the pod (not through our router)."""

    def __init__(self, url: str, audio: bytes, threads: int = 4) -> None:
        self.url, self.audio = url, audio
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                client.post(self.url + "/v1/audio/vad", data={"model": "silero-vad"},
                            files={"file": ("long.wav", self.audio, "audio/wav")})

    def depth(self) -> int:
        """The pod's queue depth as it reports it (its /metrics in-flight gauge)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        match = re.search(r'harmony_in_flight_requests\{model="silero-vad"\} (\S+)', text)
        return int(float(match.group(1))) if match else 0

    def __enter__(self) -> Busy:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def test_new_requests_go_to_the_pod_that_reports_the_shorter_queue(pods) -> None:
    audio, rate = synthesize(SENTENCES[0])
    short = wav_bytes(audio, rate)
    long = wav_bytes(np.tile(audio, 40), rate)  # a couple of minutes of speech: busy for a while
    busy, idle = pods
    config = parse_config({"models": [VAD]})
    table = ModelTable()
    table.set_model(config.models[0], [busy.url, idle.url])
    with ServerThread(create_router_app(config, table)) as router, Busy(busy.url, long) as load:
        with httpx.Client(timeout=120) as client:
            for _ in range(500):  # until the busy pod holds several requests (a condition, not a sleep)
                if load.depth() >= 3:
                    break
                httpx.get(busy.url + "/healthz", timeout=10)
            assert load.depth() >= 3, "the busy pod never got busy"
            before = {p.url: p.served() for p in pods}
            for _ in range(12):  # one at a time: this router's own in-flight count is 0 for both pods each time
                response = client.post(router.url + "/v1/audio/vad", data={"model": "silero-vad"},
                                       files={"file": ("speech.wav", short, "audio/wav")})
                assert response.status_code == 200, response.text
            served_busy = busy.served() - before[busy.url]
            served_idle = idle.served() - before[idle.url]
    # by the router's own count the pods are equal (round robin would give each 6); by what they report, the
    # busy one gets at most the first request (before any report of it) and one per expired report
    assert served_idle >= 10, (served_busy, served_idle)
