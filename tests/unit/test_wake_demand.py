"""Scale from zero that converges: the idle decision with starting pods, the cold-start marks, the router's demand
reports while requests are held, and Retry-After from the measured cold start."""

from __future__ import annotations

import asyncio

import pytest

from harmony_operator import idle
from services.core.contracts.specs import AutoscalingSpec
from services.router.cluster.wake import ModelWaker, lease_body, microtime
from services.router.routing import ModelTable
from services.router.upstream.hold import RETRY_AFTER_COLD_S, ColdStarts

AUTO = AutoscalingSpec(min_replicas=0, max_replicas=3, scale_to_zero_after=300)


def deployment(replicas: int, ready: int, woken: str | None = None, ready_at: str | None = None,
               progressing: dict | None = None) -> dict:
    marks = {k: v for k, v in ((idle.WOKEN_AT, woken), (idle.READY_AT, ready_at)) if v}
    return {"metadata": {"annotations": marks}, "spec": {"replicas": replicas},
            "status": {"replicas": replicas, "readyReplicas": ready,
                       "conditions": [progressing] if progressing else []}}


def test_a_starting_pod_is_never_scaled_to_zero() -> None:
    long_idle = idle.Times(created=0.0, woken_at=1000.0)
    assert idle.decide(AUTO, 1, long_idle, 5000.0) == 0
    assert idle.decide(AUTO, 1, long_idle, 5000.0, pod_starting=True) is None


def test_starting_means_fewer_ready_than_wanted_and_a_rollout_that_has_not_failed() -> None:
    assert idle.starting(deployment(1, 0))
    assert not idle.starting(deployment(1, 1))
    assert not idle.starting(deployment(0, 0))
    failed = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    assert not idle.starting(deployment(1, 0, progressing=failed))  # never Ready: it may go to zero


def test_the_first_ready_replica_after_a_wake_is_marked_with_the_cold_start() -> None:
    woken = idle.format_time(1000.0)
    patch = idle.ready_patch(deployment(1, 1, woken=woken), 1042.5)
    marks = patch["metadata"]["annotations"]
    assert marks[idle.COLD_START] == "42.5" and idle.parse_time(marks[idle.READY_AT]) == pytest.approx(1042.5)
    assert idle.ready_patch(deployment(1, 0, woken=woken), 1042.5) is None  # not ready yet
    assert idle.ready_patch(deployment(1, 1, woken=woken, ready_at=idle.format_time(1042.5)), 1100.0) is None
    assert idle.ready_patch(deployment(1, 1), 1100.0) is None  # never woken
    assert idle.cold_start_s({"metadata": {"annotations": marks}}) == 42.5
    # The idle clock starts at the first ready replica, not at the wake-up.
    times = idle.Times(created=0.0, woken_at=1000.0, ready_at=1400.0)
    assert idle.decide(AUTO, 1, times, 1650.0) is None and idle.decide(AUTO, 1, times, 1700.0) == 0


def test_a_held_request_is_demand_until_it_is_released() -> None:
    calls: list[str] = []

    async def report(name: str, at: float) -> None:
        calls.append(name)

    async def scenario() -> list[int]:
        waker = ModelWaker(report, report_interval_s=3600)
        seen = []
        waker.holding("cold", +1)
        for _ in range(3):  # each periodic report renews the demand while the request waits
            await asyncio.sleep(0.002)
            await waker.flush()
            seen.append(len(calls))
        waker.holding("cold", -1)
        await asyncio.sleep(0.002)
        await waker.flush()  # the release itself is demand (the request goes on to the model)
        await waker.flush()  # then nothing new
        seen.append(len(calls))
        return seen

    assert asyncio.run(scenario()) == [1, 2, 3, 4]


def test_the_demand_lease() -> None:
    body = lease_body("whisper-small", "speech", "router-0", 1_800_000_000.25, 60)
    assert body["metadata"]["name"] == "harmony-demand-whisper-small" and body["metadata"]["namespace"] == "speech"
    assert body["metadata"]["labels"][idle.DEMAND] == "true"
    assert body["spec"] == {"holderIdentity": "router-0", "leaseDurationSeconds": 60,
                            "renewTime": "2027-01-15T08:00:00.250000Z"}
    assert idle.parse_time(microtime(1_800_000_000.25)) == pytest.approx(1_800_000_000.25)
    assert idle.lease_model("harmony-demand-whisper-small") == "whisper-small" and idle.lease_model("other") is None


def test_retry_after_for_a_cold_model_is_the_rest_of_its_last_cold_start() -> None:
    cold = ColdStarts(ModelTable())
    assert cold.retry_after_s("m") == RETRY_AFTER_COLD_S  # nothing measured yet
    cold.cold_start_s["m"] = 95.0
    cold.waking_since["m"] = 1000.0
    assert cold.retry_after_s("m", now=1030.0) == 65
    assert cold.retry_after_s("m", now=1200.0) == 1  # later than ever before: soon
