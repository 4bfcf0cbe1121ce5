"""Operator high availability against kmock: several operator processes, exactly one acts.

Each operator is a process of its own (a real ``kopf run`` with leader election on, as the chart runs it):
the first takes the Lease ``harmony-operator`` and serves; a second stands by (its liveness endpoint answers,
its kopf watches and writes nothing: a new SpeechModel is handled by the leader alone); stopped cleanly, the
leader releases the Lease and the standby takes over at once; killed, its standby takes over once the Lease has
gone unrenewed for its duration, not before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from harmony_operator import leader
from harmony_operator.names import child_name
from tests.operator.harness import eventually, requests, stored
from tests.operator.test_operator import create, model

LEASES = "coordination.k8s.io/v1/leases"
DEPLOYMENTS = "apps/v1/deployments"
HOME = "harmony"  # the operator's own namespace, where its Lease is
LEASE_S = 3.0
HANDLED = "Handler 'model_created' succeeded"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """``kopf run`` in a process of its own, its log in a file."""

    def __init__(self, name: str, logs: Path) -> None:
        self.name, self.port, self.log_path = name, free_port(), logs / f"{name}.log"
        env = {**os.environ, "HARMONY_LEADER_ELECTION": "true", "HARMONY_POD_NAME": name,
               "HARMONY_POD_NAMESPACE": HOME, "HARMONY_LEADER_LEASE_S": str(LEASE_S),
               "HARMONY_LEADER_RENEW_DEADLINE_S": "2", "HARMONY_LEADER_RETRY_S": "0.2",
               "HARMONY_STANDBY_HEALTH_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", "-A", "--standalone", "-m", "tests.operator.ha_operator",
             f"--liveness=http://127.0.0.1:{self.port}/healthz"],
            env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


@contextlib.contextmanager
def operators(logs: Path) -> Iterator[dict[str, Operator]]:
    running: dict[str, Operator] = {}
    try:
        yield running
    finally:
        for op in running.values():
            op.stop(signal.SIGKILL)
            op.proc.wait(10)
        if os.environ.get("HARMONY_TEST_OPERATOR_LOG"):
            for op in running.values():
                print(f"--- {op.name}\n{op.log()[-10_000:]}")


def holder(kmock: Any) -> str:
    return leader.holder(stored(kmock, LEASES, leader.LEASE_NAME, HOME))


async def healthz(port: int) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            return response.status, await response.text()
    except aiohttp.ClientError:
        return 0, ""


async def exited(op: Operator, timeout: float) -> None:
    await eventually(lambda: op.proc.poll() is not None, timeout, f"{op.name} to exit")


def deployment_posts(kmock: Any, name: str) -> int:
    return sum(1 for r in requests(kmock, "POST", "/deployments")
               if isinstance(r.data, dict) and r.data.get("metadata", {}).get("name") == child_name(name))


async def test_one_operator_acts_and_a_standby_takes_over(cluster: Any, api: aiohttp.ClientSession,
                                                          tmp_path: Path) -> None:
    with operators(tmp_path) as ops:
        ops["a"] = Operator("op-a", tmp_path)
        await eventually(lambda: holder(cluster).startswith("op-a_"), 60, "op-a to take the Lease")
        await eventually(lambda: "/speechmodels" in str(requests(cluster, "GET", "watch=true")), 30, "a's watch")
        ops["b"] = Operator("op-b", tmp_path)
        await eventually(lambda: "stands by" in ops["b"].log(), 60, "op-b to stand by")
        assert (await healthz(ops["b"].port))[0] == 200  # a standby is alive for its liveness probe

        # The leader alone handles a new model; the standby keeps reading the Lease and does nothing else.
        lease_reads = len(requests(cluster, "GET", f"/leases/{leader.LEASE_NAME}"))
        await create(api, "speechmodels", model("one", "uid-one"))
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child_name("one")), 30, "one's Deployment")
        await eventually(lambda: len(requests(cluster, "GET", f"/leases/{leader.LEASE_NAME}")) > lease_reads + 20,
                         30, "the standby to read the Lease for a while")
        assert deployment_posts(cluster, "one") == 1
        assert HANDLED in ops["a"].log() and HANDLED not in ops["b"].log()
        assert "kopf.objects" not in ops["b"].log() and holder(cluster).startswith("op-a_")

        # Stopped cleanly, the leader releases the Lease: the standby leads well within the Lease's duration.
        ops["a"].stop(signal.SIGTERM)
        await exited(ops["a"], 30)
        stopped = time.monotonic()
        await eventually(lambda: holder(cluster).startswith("op-b_"), 30, "op-b to take over")
        assert time.monotonic() - stopped < LEASE_S
        await create(api, "speechmodels", model("two", "uid-two"))
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child_name("two")), 30, "two's Deployment from op-b")
        await eventually(lambda: HANDLED in ops["b"].log(), 10, "op-b's handler")

        # Killed (no release), the leader's Lease runs out first: a new standby takes over after its duration.
        ops["c"] = Operator("op-c", tmp_path)
        await eventually(lambda: "stands by" in ops["c"].log(), 60, "op-c to stand by")
        ops["b"].stop(signal.SIGKILL)
        await exited(ops["b"], 10)
        killed = time.monotonic()
        await eventually(lambda: holder(cluster).startswith("op-c_"), 30, "op-c to take over")
        assert time.monotonic() - killed >= LEASE_S - 2 * 0.2  # not before the Lease ran out (b renewed < 0.2 s ago)
        await create(api, "speechmodels", model("three", "uid-three"))
        await eventually(lambda: stored(cluster, DEPLOYMENTS, child_name("three")), 30, "three's Deployment from op-c")
        assert deployment_posts(cluster, "two") == 1 and deployment_posts(cluster, "three") == 1


def test_the_lease_decisions() -> None:
    theirs = {"spec": {"holderIdentity": "b_1", "renewTime": "t1", "acquireTime": "t0", "leaseTransitions": 2}}
    assert leader.may_take(None, "a_1", 0.0, 15.0)
    assert leader.may_take({"spec": {"holderIdentity": ""}}, "a_1", 0.0, 15.0)  # released
    assert not leader.may_take(theirs, "a_1", 14.9, 15.0) and leader.may_take(theirs, "a_1", 15.0, 15.0)
    taken = leader.lease_spec(theirs, "a_1", leader.Timing(), 1000.0)
    assert taken["holderIdentity"] == "a_1" and taken["leaseTransitions"] == 3 and taken["acquireTime"] != "t0"
    renewed = leader.lease_spec({"spec": taken}, "a_1", leader.Timing(), 1002.0)
    assert renewed["acquireTime"] == taken["acquireTime"] and renewed["leaseTransitions"] == 3
    assert renewed["renewTime"] == leader.micro_time(1002.0) == "1970-01-01T00:16:42.000000Z"


async def test_a_leader_that_sees_another_holder_stops_at_once(cluster: Any, api: aiohttp.ClientSession) -> None:
    from harmony_operator.kube import Kube

    lost: list[float] = []
    timing = leader.Timing(lease_s=30.0, renew_deadline_s=20.0, retry_s=0.1)
    elector = leader.Elector(Kube.from_environment(), HOME, "a_1", timing,
                             on_lost=lambda: lost.append(time.monotonic()))
    elector.start()
    try:
        await eventually(elector.leading, 10, "a_1 to lead")
        async with api.patch(f"/apis/coordination.k8s.io/v1/namespaces/{HOME}/leases/{leader.LEASE_NAME}",
                             json={"spec": {"holderIdentity": "b_1", "renewTime": "2030-01-01T00:00:00.000000Z"}},
                             headers={"Content-Type": "application/merge-patch+json"}) as response:
            assert response.status < 300
        taken = time.monotonic()
        await eventually(lambda: lost, 5, "a_1 to step down")
        assert not elector.leading() and lost[0] - taken < timing.renew_deadline_s
        assert holder(cluster) == "b_1"  # a_1 did not take it back
    finally:
        elector.stop(release=False)


def test_the_periodic_pass_of_a_standby_does_nothing() -> None:
    from harmony_operator.resync import Resync

    ran: list[str] = []
    leading = [True]
    resync = Resync(None, 300.0, active=lambda: leading[0])  # type: ignore[arg-type] - the job ignores ctx
    resync.namespaces.update({"a", "b"})
    resync._each_namespace(lambda _ctx, namespace: ran.append(namespace))
    leading[0] = False
    resync._each_namespace(lambda _ctx, namespace: ran.append(namespace))
    assert ran == ["a", "b"]
