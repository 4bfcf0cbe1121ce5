"""Scale from zero through the router: a request for a model with no ready replica is held, the operator is
asked for a replica, and the request is served once one is ready; past the hold timeout it is a 503 with
Retry-After. A real Silero VAD service plays the replica that becomes ready."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from services.core.contracts.specs import NamedModel, parse_config
from services.router.app import create_router_app
from services.router.cluster.wake import ModelWaker
from services.router.routing import ModelTable
from services.vad.app import create_vad_app
from tests.servers import ServerThread, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

COLD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
        "autoscaling": {"min_replicas": 0, "max_replicas": 2, "hold_timeout_s": 120}}
QUICK = {**COLD, "name": "vad-quick-timeout", "autoscaling": {"min_replicas": 0, "max_replicas": 2,
                                                              "hold_timeout_s": 1}}


class Reports:
    """Where the router's ModelWaker sends its reports (in a cluster: the SpeechModel's annotation)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, name: str, at: float) -> None:
        self.calls.append((name, at))


@pytest.fixture(scope="module")
def vad_service():
    with ServerThread(create_vad_app([NamedModel(**COLD)])) as server:
        wait_ready(server.url)
        yield server


@pytest.fixture
def cold_router():
    config = parse_config({"models": [COLD, QUICK]})
    table = ModelTable()
    for model in config.models:
        table.set_model(model, [])  # at zero: no ready replica
    reports = Reports()
    with ServerThread(create_router_app(config, table, waker=ModelWaker(reports))) as router:
        yield router, table, reports, config


def vad(url: str, model: str, headers: dict[str, str] | None = None) -> httpx.Response:
    audio, rate = synthesize(SENTENCES[0])
    return httpx.post(url + "/v1/audio/vad", files={"file": ("speech.wav", wav_bytes(audio, rate), "audio/wav")},
                      data={"model": model}, headers=headers or {}, timeout=300)


def held(router_url: str, model: str) -> float:
    text = httpx.get(router_url + "/metrics").text
    match = re.search(rf'harmony_router_held_requests\{{model="{re.escape(model)}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def eventually(check, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_held_request_is_served_once_a_replica_is_ready(cold_router, vad_service) -> None:
    router, table, reports, config = cold_router
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(vad, router.url, "silero-vad")
        eventually(lambda: held(router.url, "silero-vad") == 1, what="the request to be held")
        assert not pending.done()  # no replica: it cannot have been answered
        eventually(lambda: any(name == "silero-vad" for name, _ in reports.calls), what="the wake-up report")
        # A replica becomes ready (the operator's ConfigMap, or an EndpointSlice watch, tells the table).
        table.set_model(next(m for m in config.models if m.name == "silero-vad"), [vad_service.url])
        response = pending.result(timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["segments"], response.json()
    assert held(router.url, "silero-vad") == 0
    # With the replica there, the next request goes straight through.
    assert vad(router.url, "silero-vad").status_code == 200


def test_the_hold_times_out_with_503_and_retry_after(cold_router) -> None:
    router, _, reports, _ = cold_router
    started = time.monotonic()
    response = vad(router.url, "vad-quick-timeout")
    waited = time.monotonic() - started
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "model_starting"
    assert waited >= 0.9  # it was held for its hold_timeout_s (1 s) first
    assert any(name == "vad-quick-timeout" for name, _ in reports.calls)
    assert held(router.url, "vad-quick-timeout") == 0


def test_a_client_deadline_shortens_the_hold(cold_router) -> None:
    router, _, _, _ = cold_router
    started = time.monotonic()
    response = vad(router.url, "silero-vad", headers={"X-Harmony-Timeout": "0.5"})
    assert response.status_code == 503, response.text
    assert time.monotonic() - started < 60  # not the model's 120 s hold
    assert response.headers["Retry-After"]
