"""The router's retry policy (which failures go to another replica, which eject the replica) and ejection with
probes back, without servers: verdicts are pure, and the probe is a function the test scripts."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.core.contracts.specs import NamedModel
from services.core.runtime.metrics import Metrics
from services.router.routing import ModelTable
from services.router.upstream.ejection import Ejections
from services.router.upstream.retry import MAX_ATTEMPTS, Verdict, after_error, after_status, ejects

VAD = NamedModel.model_validate({"name": "silero-vad", "task": "vad", "backend": "silero",
                                 "source": {"package": "silero-vad"}})


@pytest.mark.parametrize("exc, replayable, verdict, eject", [
    (httpx.ConnectError("refused"), False, Verdict.EJECT_AND_RETRY, True),  # never sent: always safe
    (httpx.ConnectTimeout("slow connect"), False, Verdict.EJECT_AND_RETRY, True),
    (httpx.ReadError("reset"), True, Verdict.EJECT_AND_RETRY, True),  # died mid-request: inference is replayable
    (httpx.RemoteProtocolError("closed without answer"), True, Verdict.EJECT_AND_RETRY, True),
    (httpx.ReadError("reset"), False, Verdict.GIVE_UP, True),  # a voice registration may have happened
    (httpx.ReadTimeout("slow"), True, Verdict.GIVE_UP, False),  # slow, not gone: a second try doubles the load
    (httpx.WriteTimeout("slow"), True, Verdict.GIVE_UP, False),
    (httpx.PoolTimeout("busy"), True, Verdict.GIVE_UP, False),
])
def test_transport_errors(exc: httpx.TransportError, replayable: bool, verdict: Verdict, eject: bool) -> None:
    assert after_error(exc, replayable) is verdict
    assert ejects(exc) is eject


@pytest.mark.parametrize("status, verdict", [
    (429, Verdict.RETRY), (503, Verdict.RETRY),  # refused before starting: queue full, draining, not loaded
    (200, Verdict.GIVE_UP), (400, Verdict.GIVE_UP), (404, Verdict.GIVE_UP), (500, Verdict.GIVE_UP),
    (502, Verdict.GIVE_UP), (504, Verdict.GIVE_UP),
])
def test_statuses(status: int, verdict: Verdict) -> None:
    assert after_status(status) is verdict


def test_attempts_are_bounded() -> None:
    assert 2 <= MAX_ATTEMPTS <= 5


class ScriptedProbe:
    def __init__(self, answers: list[bool]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, url: str, model: str) -> bool:
        self.calls.append((url, model))
        return self.answers.pop(0) if self.answers else False


async def wait_for(check, what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_an_ejected_replica_sits_out_alone_until_its_probe_answers() -> None:
    table = ModelTable()
    table.set_model(VAD, ["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
    bad, good = table.models["silero-vad"].replicas
    probe = ScriptedProbe([False, False, True])
    metrics = Metrics("router")
    ejections = Ejections(table, probe, first_probe_s=0.01, max_probe_s=0.02, metrics=metrics)
    ejections.eject("silero-vad", bad, "ConnectError")
    ejections.eject("silero-vad", bad, "ConnectError")  # once per ejection: one probe loop
    ejected = {"model": "silero-vad"}
    assert metrics.registry.get_sample_value("harmony_router_ejections_total", ejected) == 1
    assert metrics.registry.get_sample_value("harmony_router_ejected_replicas", ejected) == 1
    model = table.models["silero-vad"]
    assert [table.pick(model) for _ in range(4)] == [good] * 4  # the model serves on; only the pod sits out
    await wait_for(lambda: not bad.ejected, "the probe to bring the replica back")
    assert metrics.registry.get_sample_value("harmony_router_ejected_replicas", ejected) == 0
    assert probe.calls == [("http://10.0.0.1:8080", "silero-vad")] * 3
    assert {table.pick(model).url for _ in range(4)} == {bad.url, good.url}
    await ejections.aclose()


async def test_a_replica_that_leaves_the_table_is_no_longer_probed() -> None:
    table = ModelTable()
    table.set_model(VAD, ["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
    gone = table.models["silero-vad"].replicas[0]
    probe = ScriptedProbe([])
    ejections = Ejections(table, probe, first_probe_s=0.01, max_probe_s=0.02)
    ejections.eject("silero-vad", gone, "ReadError")
    await wait_for(lambda: probe.calls, "a first probe")
    table.set_replicas("silero-vad", ["http://10.0.0.2:8080"])  # its pod left the EndpointSlice
    await wait_for(lambda: not ejections._probes, "the probe loop to end")
    calls = len(probe.calls)
    await asyncio.sleep(0.05)
    assert len(probe.calls) == calls
    await ejections.aclose()
