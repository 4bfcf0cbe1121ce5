"""Scale from zero that converges, against kmock: a real kopf run, the router's own demand-Lease reporter.

A model woken by a request whose pod takes longer than ``scale_to_zero_after`` (and than the router's hold) to get
Ready (a GPU node being added, a big image, a slow load) is not put back to zero while its pod starts: one wake,
no loop. Its first ready replica restarts the idle clock and its cold start is measured (status, annotation).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import httpx

from harmony_operator import idle
from services.router.cluster.wake import DemandLeases
from tests.operator.harness import NAMESPACE, eventually, requests, running_operator, stored
from tests.operator.test_operator import DEPLOYMENTS, MODELS, condition, create, patch
from tests.operator.test_scale_to_zero import CHILD, IDLE_AFTER_S, NAME, cold_model, pods_ready, replicas

LEASES = "coordination.k8s.io/v1/leases"


def scalings(cluster: Any, to: int) -> list[Any]:
    """The operator's PATCHes of the Deployment that set its replicas to ``to``."""
    return [r for r in requests(cluster, "PATCH", f"/deployments/{CHILD}")
            if isinstance(r.data, dict) and (r.data.get("spec") or {}).get("replicas") == to]


def idle_checks(cluster: Any) -> int:
    """How many times the operator read the demand Lease (once per idle check of the model)."""
    return len(requests(cluster, "GET", f"/leases/{idle.lease_name(NAME)}"))


async def starting(api: aiohttp.ClientSession) -> None:
    """A pod exists, but it is not Ready (what the Deployment controller reports while it starts)."""
    await patch(api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{CHILD}", {"status": {
        "replicas": 1, "readyReplicas": 0, "updatedReplicas": 1, "availableReplicas": 0}})


async def test_a_slow_start_is_one_wake_and_no_scale_down_loop(cluster: Any, api: aiohttp.ClientSession) -> None:
    async with running_operator(cluster):
        await create(api, "speechmodels", cold_model())
        await eventually(lambda: stored(cluster, DEPLOYMENTS, CHILD), what="deployment")
        await pods_ready(api, 1)
        await eventually(lambda: replicas()(cluster) == 0, 30, "scaled to zero")
        await pods_ready(api, 0)
        assert len(scalings(cluster, 1)) == 0

        # One request: the router creates the model's demand Lease (and never writes the SpeechModel).
        async with httpx.AsyncClient(base_url=str(cluster.url)) as client:
            await DemandLeases(client, NAMESPACE, holder="router-0")(NAME, time.time())
        lease = stored(cluster, LEASES, idle.lease_name(NAME))
        assert lease["metadata"]["labels"][idle.DEMAND] == "true" and lease["spec"]["holderIdentity"] == "router-0"
        await eventually(lambda: replicas()(cluster) == 1, 30, "woken: one replica")
        woken = time.monotonic()
        await starting(api)

        # The pod stays unready for several times scale_to_zero_after (and no request renews the demand, as when
        # the router's hold ran out): the operator checks again and again, and leaves it starting.
        checks = idle_checks(cluster)
        await eventually(lambda: idle_checks(cluster) >= checks + 6 and time.monotonic() - woken > 2 * IDLE_AFTER_S,
                         30, "idle checks past scale_to_zero_after")
        assert replicas()(cluster) == 1, "a starting pod was scaled away"
        assert len(scalings(cluster, 1)) == 1 and len(scalings(cluster, 0)) == 1

        # Ready at last: the cold start is measured, and the idle clock starts from the first ready replica.
        await pods_ready(api, 1)
        marks = await eventually(lambda: stored(cluster, DEPLOYMENTS, CHILD)["metadata"]["annotations"]
                                 .get(idle.COLD_START), what="cold start measured")
        assert float(marks) >= 2 * IDLE_AFTER_S
        await eventually(lambda: "cold start" in condition(stored(cluster, MODELS, NAME), "Ready").get("message", ""),
                         what="cold start in the status")
        # Then, with no demand, it goes to zero once more: still one wake.
        await eventually(lambda: replicas()(cluster) == 0, 30, "idle again: zero")
        assert len(scalings(cluster, 1)) == 1 and len(scalings(cluster, 0)) == 2
