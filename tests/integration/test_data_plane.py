"""The per-pod data plane on loopback: the router in front of several real Silero VAD services, each its own process
(``python -m services.service_main``, as a model pod runs it) on its own loopback address (a pod IP), all on one port,
behind an EndpointSlice fixture that plays the endpoint controller: it reports the pods' readiness to the router's
PodDirectory exactly as the EndpointSlice watch does.

Under a steady load of concurrent requests: requests spread over the pods; a pod killed (SIGKILL) mid-load costs no
client an error (what it had in flight and what it refuses go to the other pods, and it is ejected alone); a rolling
restart (each pod replaced by a new one, stopped with SIGTERM and drained, its endpoint flipped before or after)
costs none either; a draining pod's 503 sends the request to another pod.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from services.core.contracts.specs import NamedModel, parse_config
from services.core.contracts.wire import RouterModels
from services.router.app import create_router_app
from services.router.cluster import config_map as cluster
from services.router.cluster.endpoint_slices import EndpointSlice, SliceEvent
from services.router.cluster.pods import PodDirectory
from services.router.routing import ModelTable
from services.vad.app import create_vad_app
from tests.servers import ServerThread, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

NS = "speech"
SERVICE = "harmony-silero-vad"
VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}
ADDRESSES = (f"127.0.0.{n}" for n in itertools.count(11))  # each new pod gets a new "pod IP"


def common_port() -> int:
    """A port free on the loopback addresses the pods will take (pods of a model share their port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.10", 0))
        return sock.getsockname()[1]


class Pod:
    """One model pod: ``python -m services.service_main`` on its own loopback address."""

    def __init__(self, model_file: Path, port: int, log_dir: Path) -> None:
        self.address = next(ADDRESSES)
        self.url = f"http://{self.address}:{port}"
        self.log = log_dir / f"pod-{self.address}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.service_main", "--model-file", str(model_file), "--host",
                 self.address, "--port", str(port), "--drain-timeout", "60", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def wait_ready(self) -> Pod:
        try:
            wait_ready(self.url, timeout=120)
        except RuntimeError:
            raise RuntimeError(f"pod {self.url} did not start:\n{self.log.read_text(errors='replace')}") from None
        return self

    def served(self) -> float:
        """VAD requests this pod answered 200 (its own metrics)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        pattern = r'harmony_http_requests_total\{[^}]*outcome="ok"[^}]*route="/v1/audio/vad"[^}]*\} (\S+)'
        return sum(float(v) for v in re.findall(pattern, text))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


class EndpointSlices:
    """The endpoint controller's part: the Service's EndpointSlice, its pods' readiness, as watch events."""

    def __init__(self, pods: PodDirectory, port: int) -> None:
        self.directory = pods
        self.port = port
        self.version = itertools.count(1)
        self.ready: dict[str, bool] = {}

    def _slice(self) -> dict:
        endpoints = [{"addresses": [address], "conditions": {"ready": ready, "serving": True, "terminating": not ready}}
                     for address, ready in self.ready.items()]
        return {"metadata": {"name": f"{SERVICE}-abcde", "namespace": NS, "resourceVersion": str(next(self.version)),
                             "labels": {"kubernetes.io/service-name": SERVICE}},
                "addressType": "IPv4", "endpoints": endpoints,
                "ports": [{"name": "http", "port": self.port, "protocol": "TCP"}]}

    def listed(self) -> None:
        self.directory.reset([EndpointSlice.model_validate(self._slice())])

    def publish(self, **changes: bool | None) -> None:
        """Addresses (dots as underscores) -> ready, not ready (terminating), or None (gone)."""
        for key, ready in changes.items():
            address = key.replace("_", ".")
            if ready is None:
                self.ready.pop(address, None)
            else:
                self.ready[address] = ready
        self.directory.event(SliceEvent.model_validate({"type": "MODIFIED", "object": self._slice()}))

    def set(self, pod: Pod, ready: bool | None) -> None:
        self.publish(**{pod.address.replace(".", "_"): ready})


class Load:
    """Threads sending VAD requests through the router until stopped; every answer's status is kept."""

    def __init__(self, url: str, audio: bytes, threads: int = 4) -> None:
        self.url, self.audio = url, audio
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url + "/v1/audio/vad", data={"model": "silero-vad"},
                                           files={"file": ("speech.wav", self.audio, "audio/wav")})
                    self.statuses.append(response.status_code)
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:300]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=180)

    def until(self, more: int, timeout: float = 120) -> None:
        """Wait until ``more`` further requests have been answered."""
        target = len(self.statuses) + more
        deadline = time.monotonic() + timeout
        while len(self.statuses) < target:
            assert time.monotonic() < deadline, f"the load stalled at {len(self.statuses)} answers"
            time.sleep(0.02)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.model_file = tmp / "model.yaml"
        self.model_file.write_text(yaml.safe_dump(VAD))
        self.port = common_port()
        self.table = ModelTable()
        self.directory = PodDirectory(self.table, NS)
        endpoint = f"http://{SERVICE}.{NS}.svc.cluster.local:{self.port}"
        models = RouterModels.model_validate({"models": [{"name": "silero-vad", "endpoint": endpoint,
                                                          "spec": {k: v for k, v in VAD.items() if k != "name"}}]})
        cluster.apply(self.table, cluster.ClusterModels.from_wire(models), self.directory)
        self.slices = EndpointSlices(self.directory, self.port)
        self.pods: list[Pod] = []

    def start(self, count: int = 1) -> list[Pod]:
        pods = [Pod(self.model_file, self.port, self.tmp) for _ in range(count)]
        for pod in pods:
            pod.wait_ready()
            self.pods.append(pod)
        return pods

    def live(self) -> list[Pod]:
        return [p for p in self.pods if p.proc.poll() is None]

    def replicas(self) -> list[str]:
        return [r.url for r in self.table.models["silero-vad"].replicas]


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    state = Cluster(tmp_path_factory.mktemp("pods"))
    state.slices.listed()  # the watch's first list: no pod yet
    config = parse_config({"models": [VAD]})
    try:
        with ServerThread(create_router_app(config, state.table)) as router:
            state.router = router
            yield state
    finally:
        for pod in state.pods:
            pod.stop(signal.SIGKILL)


@pytest.fixture
def three_pods(kube):
    """Three ready pods in the EndpointSlice (pods a test stopped are replaced, as the Deployment would)."""
    for pod in kube.pods:
        if pod.proc.poll() is not None and pod.address in kube.slices.ready:
            kube.slices.set(pod, None)
    missing = 3 - len(kube.live())
    for pod in kube.start(missing) if missing > 0 else []:
        kube.slices.set(pod, True)
    assert sorted(kube.replicas()) == sorted(p.url for p in kube.live())
    return kube


@pytest.fixture(scope="module")
def audio() -> bytes:
    return wav_bytes(*synthesize(SENTENCES[0]))


def test_requests_spread_over_the_pods(three_pods, audio) -> None:
    kube = three_pods
    before = {p.url: p.served() for p in kube.live()}
    with Load(kube.router.url, audio, threads=3) as load:
        load.until(45)
    assert not load.failures, load.failures[:5]
    served = {p.url: p.served() - before[p.url] for p in kube.live()}
    total = sum(served.values())
    assert total >= 45
    # least outstanding requests, round robin between equals: every pod takes a real share (a third, give or take)
    assert all(count >= total / 10 for count in served.values()), served
    print(f"\nper-pod balancing: {total:.0f} requests, per pod {sorted(served.values())}")


def test_a_pod_killed_mid_load_costs_no_client_an_error(three_pods, audio) -> None:
    kube = three_pods
    victim = kube.live()[0]
    with Load(kube.router.url, audio, threads=4) as load:
        load.until(12)
        victim.stop(signal.SIGKILL)  # no drain: what it had in flight breaks
        load.until(24)  # the endpoint controller has not noticed yet: the router ejected the pod itself
        ejected = {r.url: r.ejected for r in kube.table.models["silero-vad"].replicas}
        kube.slices.set(victim, False)  # its readiness probe failed
        load.until(12)
        kube.slices.set(victim, None)
        load.until(6)
    assert not load.failures, load.failures[:5]
    assert ejected[victim.url] and sum(ejected.values()) == 1  # the dead pod alone sat out
    print(f"\npod killed mid-load: {len(load.statuses)} requests, {len(load.failures)} client errors")
    assert victim.url not in kube.replicas()


def test_a_rolling_restart_costs_no_client_an_error(three_pods, audio) -> None:
    kube = three_pods
    old = kube.live()
    # the Deployment's new pods, started together before the load (a start under load took 9 s on 2 cores); the
    # router sees only their endpoints, one at a time as maxSurge 1, maxUnavailable 0 adds them: ready first
    replacements = kube.start(len(old))
    with Load(kube.router.url, audio, threads=4) as load:
        load.until(8)
        for n, (pod, new) in enumerate(zip(old, replacements)):
            kube.slices.set(new, True)
            load.until(4)
            if n % 2 == 0:
                # Kubernetes' order: the pod leaves its endpoints (terminating) while its preStop hook sleeps,
                # then SIGTERM drains it
                kube.slices.set(pod, False)
                time.sleep(0.3)
                assert pod.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
            else:
                # the endpoints lag behind SIGTERM: the draining pod refuses (or no longer listens), the router
                # sends those requests to another pod
                assert pod.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
                load.until(8)
                kube.slices.set(pod, False)
            kube.slices.set(pod, None)
            load.until(4)
        load.until(8)
    assert not load.failures, load.failures[:5]
    assert len(load.statuses) >= 8 + 3 * 8
    assert sorted(kube.replicas()) == sorted(p.url for p in kube.live()) and len(kube.live()) == 3
    assert not set(kube.replicas()) & {p.url for p in old}
    print(f"\nrolling restart of 3 pods: {len(load.statuses)} requests, {len(load.failures)} client errors")


@pytest.fixture
def draining_pair():
    """Two in-process VAD services; the first drains (as after SIGTERM, its listener left open)."""
    model = NamedModel.model_validate(VAD)
    with ServerThread(create_vad_app([model])) as draining, ServerThread(create_vad_app([model])) as live:
        wait_ready(draining.url)
        wait_ready(live.url)
        draining.app.state.drain.start()
        yield draining, live


def test_a_draining_pod_refuses_new_work_and_the_router_retries_elsewhere(draining_pair, audio) -> None:
    draining, live = draining_pair
    readyz = httpx.get(draining.url + "/readyz")
    assert readyz.status_code == 503 and readyz.json()["models"] == {"silero-vad": "draining"}
    assert httpx.get(draining.url + "/healthz").status_code == 200
    refused = httpx.post(draining.url + "/v1/audio/vad", data={"model": "silero-vad"},
                         files={"file": ("speech.wav", audio, "audio/wav")})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert refused.headers["Retry-After"] and set(refused.json()["error"]) == {"message", "type", "param", "code"}

    config = parse_config({"models": [VAD]})
    table = ModelTable()
    table.set_model(config.models[0], [draining.url, live.url])
    with ServerThread(create_router_app(config, table)) as router:
        for _ in range(6):  # round robin between idle replicas: the first to go to the draining one is refused
            response = httpx.post(router.url + "/v1/audio/vad", data={"model": "silero-vad"},
                                  files={"file": ("speech.wav", audio, "audio/wav")}, timeout=120)
            assert response.status_code == 200, response.text
    metrics = draining.app.state.metrics.registry
    refusals = metrics.get_sample_value("harmony_http_requests_total", {
        "component": "vad", "route": "unmatched", "outcome": "unavailable"}) or 0.0
    refusals += metrics.get_sample_value("harmony_http_requests_total", {
        "component": "vad", "route": "/v1/audio/vad", "outcome": "unavailable"}) or 0.0
    # the draining pod was asked, refused, and the request went on; a refusal counts as a full queue for a while
    # (routing.REFUSED_DEPTH), so the next requests go straight to the live pod rather than each paying a retry
    assert 1 <= refusals <= 2
    assert not any(r.ejected for r in table.models["silero-vad"].replicas)  # refusing is not failing
