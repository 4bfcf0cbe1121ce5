"""The router's spool budget: request bodies it holds at once (here, uploads held for a model scaled to zero) stay
within ``server.spool_budget_bytes``; one past it is refused at once with 503 ``spool_full`` and a Retry-After, before
its body is read, rather than filling the pod's bounded /tmp (where the kubelet would evict the pod)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

from services.core.contracts.specs import parse_config
from services.core.http.uploads import SpoolBudget
from services.router.app import create_router_app
from services.router.routing import ModelTable
from tests.servers import ServerThread
from tests.speech import SENTENCES, synthesize, wav_bytes

VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"},
       "autoscaling": {"min_replicas": 0, "hold_timeout_s": 60}}
BUDGET = 3_000_000


@pytest.fixture(scope="module")
def upload() -> bytes:
    audio, rate = synthesize(SENTENCES[0])
    body = wav_bytes(np.tile(audio, 1 + 2_000_000 // (2 * len(audio))), rate)
    assert 2_000_000 < len(body) < BUDGET
    return body


def post(url: str, body: bytes, timeout_s: float) -> httpx.Response:
    return httpx.post(url + "/v1/audio/vad", data={"model": "silero-vad"}, timeout=60,
                      files={"file": ("speech.wav", body, "audio/wav")}, headers={"X-Harmony-Timeout": str(timeout_s)})


def wait_for(check, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_body_past_the_budget_is_refused_while_others_are_held(upload: bytes) -> None:
    config = parse_config({"server": {"spool_budget_bytes": BUDGET}, "models": [VAD]})
    table = ModelTable()
    table.set_model(config.models[0], [])  # scaled to zero: its calls are held (with their bodies)
    answers: list[httpx.Response] = []
    with ServerThread(create_router_app(config, table)) as router:
        first = threading.Thread(target=lambda: answers.append(post(router.url, upload, timeout_s=8)))
        first.start()
        wait_for(lambda: table.models["silero-vad"].held == 1, "the first upload to be held")
        refused = post(router.url, upload, timeout_s=8)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "spool_full"
        assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert refused.headers["Retry-After"] == "1"
        assert table.models["silero-vad"].held == 1  # never read, never held
        # the held request is being served: the router's autoscaling gauge (router.autoscaling.targetInFlight)
        metrics = httpx.get(router.url + "/metrics").text
        assert 'harmony_http_in_flight_requests{component="router"} 2.0' in metrics  # it, and this scrape
        small = post(router.url, upload[:200_000], timeout_s=1)  # what still fits goes on (and is held)
        assert small.json()["error"]["code"] == "model_starting", small.text
        first.join(timeout=60)
        assert answers[0].json()["error"]["code"] == "model_starting"
        # the held upload's bytes are given back when its request ends: the next one fits again
        again = post(router.url, upload, timeout_s=0.5)
        assert again.json()["error"]["code"] == "model_starting", again.text


def test_one_body_alone_always_fits_and_zero_means_no_budget() -> None:
    budget = SpoolBudget(100)
    assert budget.take(500)  # alone: bounded by its own upload limit
    assert not budget.take(1)
    budget.give(500)
    assert budget.take(60) and budget.take(40) and not budget.take(1)
    unlimited = SpoolBudget(0)
    assert all(unlimited.take(10 ** 9) for _ in range(5))
