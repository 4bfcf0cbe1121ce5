"""Leader election: of the operator's replicas, exactly one acts; the others stand by, ready to take over.

The leader holds a coordination.k8s.io Lease (``harmony-operator`` in the operator's namespace), renewing it every
``retry_s``; a standby reads it as often and takes it when it is free (released, or no holder) or when the
holder has not renewed it for ``lease_s`` (measured on the standby's own clock from the moment it saw the record
change, as client-go does, so clocks need not agree). A leader that cannot renew for ``renew_deadline_s`` (less
than ``lease_s``) stops acting at once (:meth:`Elector.leading` turns False on its own clock, before any standby
may take over) and exits the process: the kubelet restarts it as a standby. On a clean stop it releases the Lease,
so a standby takes over within ``retry_s``.

Why not kopf's peering: operators of the same priority all freeze (two replicas with a priority each from the pod
name may collide), its pause covers kopf's own watches but not the operator's periodic pass (resync.py), and
``--all-namespaces`` needs the cluster-scoped ClusterKopfPeering. Here a standby's kopf has not even started: it
watches nothing, writes nothing, and its liveness is served by :class:`StandbyHealth` until it leads.

Writes carry the Lease's ``resourceVersion`` (a precondition the API server checks: two standbys taking a free
Lease at once, one gets 409 and stays standby).
"""

from __future__ import annotations

import asyncio
import datetime
import http.server
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .kube import Kube, KubeError

log = logging.getLogger("harmony.operator.leader")
LEASE_NAME = "harmony-operator"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Timing:
    lease_s: float = 15.0          # a holder silent this long (on the reader's clock) has lost the Lease
    renew_deadline_s: float = 10.0  # a leader that could not renew for this long stops acting
    retry_s: float = 2.0           # how often the leader renews and a standby reads


def micro_time(at: float) -> str:
    """A Kubernetes MicroTime (RFC 3339 with microseconds)."""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def holder(lease: dict[str, Any] | None) -> str:
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def record(lease: dict[str, Any] | None) -> tuple[str, str]:
    """What changes at each renewal: the holder and its renew time."""
    spec = (lease or {}).get("spec") or {}
    return str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or "")


def may_take(lease: dict[str, Any] | None, me: str, unchanged_for_s: float, lease_s: float) -> bool:
    """Whether ``me`` may hold the Lease now: no holder, ``me`` already, or a holder silent for ``lease_s``."""
    current = holder(lease)
    return not current or current == me or unchanged_for_s >= lease_s


def lease_spec(lease: dict[str, Any] | None, me: str, timing: Timing, now: float) -> dict[str, Any]:
    """The spec that makes ``me`` the holder (a renewal keeps acquireTime; a takeover counts a transition)."""
    spec = (lease or {}).get("spec") or {}
    renewal = holder(lease) == me
    return {"holderIdentity": me, "leaseDurationSeconds": max(1, round(timing.lease_s)),
            "acquireTime": spec.get("acquireTime") if renewal and spec.get("acquireTime") else micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if renewal or lease is None else 1)}


def identity(pod_name: str = "") -> str:
    """This process: the pod's name and a random suffix (a restarted container is a new candidate)."""
    return f"{pod_name or os.uname().nodename}_{uuid.uuid4().hex[:8]}"


def own_namespace(configured: str = "") -> str:
    if configured:
        return configured
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE) as f:
            return f.read().strip()
    except OSError:
        return "default"


def exit_process() -> None:
    """Leadership lost: stop everything now (as client-go's callers do); the kubelet restarts a standby."""
    log.critical("leader election: the Lease was lost; exiting so that only the new leader acts")
    logging.shutdown()
    os._exit(1)


class Elector:
    """A daemon thread that takes and renews the Lease; :meth:`leading` says whether this process may act."""

    def __init__(self, kube: Kube, namespace: str, me: str, timing: Timing = Timing(), name: str = LEASE_NAME,
                 on_lost: Callable[[], None] = exit_process) -> None:
        self.kube, self.namespace, self.me, self.timing, self.name = kube, namespace, me, timing, name
        self.on_lost = on_lost
        self._renewed_at: float | None = None  # monotonic time of the last successful write while leading
        self._seen: tuple[str, str] | None = None
        self._seen_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harmony-leader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def leading(self) -> bool:
        """Leader, and renewed within the renew deadline (on this clock: a hung renewal stops acting in time)."""
        at = self._renewed_at
        return at is not None and time.monotonic() - at < self.timing.renew_deadline_s

    async def wait_leading(self) -> None:
        """Until this process leads (cancellable: a standby told to stop stops)."""
        while not self.leading():
            await asyncio.sleep(min(0.2, self.timing.retry_s))

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if release and self.leading():
            self._renewed_at = None
            try:  # the next candidate takes a Lease with no holder at its next read
                self.kube.patch("Lease", self.namespace, self.name, {"spec": {
                    "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": micro_time(time.time())}})
                log.info("leader election: released %s/%s", self.namespace, self.name)
            except KubeError as exc:
                log.warning("leader election: could not release the Lease: %s", exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            was_leading = self._renewed_at is not None
            try:
                held = self.try_hold()
            except Exception as exc:  # noqa: BLE001 - an API outage is one more failed try
                log.warning("leader election: %s", exc)
                held = False
            if held:
                if not was_leading:
                    log.info("leader election: %s leads (%s/%s)", self.me, self.namespace, self.name)
                self._renewed_at = started
            elif was_leading and (not self.leading() or self._seen is None or self._seen[0] != self.me):
                self._renewed_at = None  # could not renew in time, or another candidate holds the Lease now
                if not self._stop.is_set():
                    self.on_lost()
            self._stop.wait(self.timing.retry_s)

    def try_hold(self) -> bool:
        """One read, then one write if this process may hold the Lease: whether it holds it now."""
        lease = self.kube.get("Lease", self.namespace, self.name)
        now = time.monotonic()
        if record(lease) != self._seen:
            self._seen, self._seen_at = record(lease), now
        if not may_take(lease, self.me, now - self._seen_at, self.timing.lease_s):
            return False
        spec = lease_spec(lease, self.me, self.timing, time.time())
        try:
            if lease is None:
                self.kube.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                  "metadata": {"name": self.name, "namespace": self.namespace}, "spec": spec})
            else:
                version = (lease.get("metadata") or {}).get("resourceVersion")
                patch: dict[str, Any] = {"spec": spec}
                if version:
                    patch["metadata"] = {"resourceVersion": version}
                self.kube.patch("Lease", self.namespace, self.name, patch)
        except KubeError as exc:
            if exc.status == 409:  # another candidate wrote first
                return False
            raise
        self._seen, self._seen_at = record({"spec": spec}), now
        return True


class StandbyHealth:
    """The liveness endpoint while kopf (which serves it once leading) has not started: 200 while the elector runs."""

    def __init__(self, port: int, alive: Callable[[], bool]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                ok = alive()
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"standby": true}' if ok else b'{"standby": false}')

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="harmony-standby-health", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Free the port for kopf's own liveness endpoint."""
        self.server.shutdown()
        self.server.server_close()
