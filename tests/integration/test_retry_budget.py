"""The router's retry budget against failing model services on loopback: retries of 429/503 answers and of refused
connections add at most a tenth to the load (plus a small reserve), and the refused retries are counted."""

from __future__ import annotations

import asyncio
import re

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import generate_latest

from services.core.contracts.errors import HarmonyError, error_body
from services.core.contracts.specs import NamedModel
from services.core.runtime.metrics import Metrics
from services.router.routing import ModelTable
from services.router.upstream.clients import ServiceClients
from services.router.upstream.retry import MAX_ATTEMPTS
from services.router.upstream.retry_budget import RATIO, RESERVE, RetryBudget
from tests.servers import ServerThread, dead_url

VAD = NamedModel.model_validate({"name": "silero-vad", "task": "vad", "backend": "silero",
                                 "source": {"package": "silero-vad"}})
CALLS = 200


def refusing_service(status: int, seen: list[int]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/audio/vad")
    async def vad() -> JSONResponse:
        seen.append(status)
        return JSONResponse(error_body("busy", "server_error", None, "queue_full"), status_code=status,
                            headers={"Retry-After": "1"})

    return app


def refused_by_budget(metrics: Metrics) -> float:
    text = generate_latest(metrics.registry).decode()
    match = re.search(r'harmony_router_retries_total\{model="silero-vad",outcome="refused_by_budget"\} (\S+)', text)
    return float(match.group(1)) if match else 0.0


async def _calls(urls: list[str], metrics: Metrics, budget: RetryBudget) -> list[int]:
    table = ModelTable()
    table.set_model(VAD, urls)
    clients = ServiceClients(table, timeout_s=30, metrics=metrics, budget=budget)
    statuses: list[int] = []
    try:
        for _ in range(CALLS):
            try:
                await clients.post(table.models["silero-vad"], "/v1/audio/vad", content=b"x")
            except HarmonyError as exc:
                statuses.append(exc.status_code)
    finally:
        await clients.aclose()
    return statuses


@pytest.mark.parametrize("status", [429, 503])
def test_retries_of_refusals_stay_within_a_tenth_of_the_load(status: int) -> None:
    seen: list[int] = []
    apps = [refusing_service(status, seen) for _ in range(MAX_ATTEMPTS)]
    metrics = Metrics("router")
    with ServerThread(apps[0]) as a, ServerThread(apps[1]) as b, ServerThread(apps[2]) as c:
        statuses = asyncio.run(_calls([a.url, b.url, c.url], metrics, RetryBudget()))
    assert statuses == [status] * CALLS  # every client gets the refusal, as before; only fewer tries made it
    retries = len(seen) - CALLS
    assert 0 < retries <= RESERVE + RATIO * CALLS, f"{retries} retries for {CALLS} calls"
    # without a budget each call would have gone to all three (2 retries a call, 3 x the load); a call the budget
    # did not stop made both, so at least CALLS - retries / 2 calls were stopped, each counted once
    assert CALLS - retries / 2 <= refused_by_budget(metrics) <= CALLS


def test_refused_connections_spend_the_same_budget() -> None:
    seen: list[int] = []
    metrics = Metrics("router")
    with dead_url() as dead, ServerThread(refusing_service(503, seen)) as alive:
        asyncio.run(_calls([dead, alive.url], metrics, RetryBudget()))
    # the dead replica is ejected at its first refused connection (no retry spent on it again), the live one
    # answers 503 with nobody left to go to: so only the first call's step around the dead pod is a retry
    assert len(seen) == CALLS
    assert refused_by_budget(metrics) == 0


def test_the_budget_refills_from_first_tries_only() -> None:
    budget = RetryBudget(ratio=0.1, reserve=2.0)
    assert [budget.try_retry("m") for _ in range(3)] == [True, True, False]  # the reserve, then nothing
    for _ in range(9):
        budget.first_try("m")
    assert not budget.try_retry("m")  # 0.9 of a token
    budget.first_try("m")
    assert budget.try_retry("m") and not budget.try_retry("m")
    for _ in range(100):
        budget.first_try("m")
    assert budget.tokens("m") == pytest.approx(2.0)  # never more than the reserve
    assert budget.tokens("other") == 2.0  # each model has its own
