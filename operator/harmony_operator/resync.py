"""The periodic pass: every namespace the operator has seen a SpeechModel or SpeechRoute in, re-applied.

It replaces kopf timers, which put a finalizer on every object they run for (and with it
the hang of `helm uninstall`, which removes the operator first). Events do the real work
(an edited or deleted child is repaired at its event); this pass is the safety net for a
missed one, and it keeps statuses fresh.

The same thread runs the idle check of models that scale to zero (``min_replicas: 0``,
engine hpa) more often, every ``scale_check_interval_s``: one put to zero after
``scale_to_zero_after`` without requests (waking one is the event handler's job, at once).
And every ``pull_progress_interval_s`` it refreshes the status of the models whose pods fetch
their weights (Downloading): the bytes of a running pull are in its log, and a running init
container makes no pod event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import kopf

from . import idle, reconcile
from .kube import KubeError

log = logging.getLogger("harmony.operator")
Job = Callable[[reconcile.Context, str], None]


def resync_namespace(ctx: reconcile.Context, namespace: str) -> None:
    """Re-apply every SpeechModel of ``namespace`` (each failure logged, none stopping the rest), then sync it."""
    for item in ctx.kube.list("SpeechModel", namespace):
        try:
            reconcile.reconcile_model(ctx, item)
        except (kopf.PermanentError, kopf.TemporaryError, KubeError) as exc:
            log.warning("periodic pass: SpeechModel %s/%s: %s", namespace, item["metadata"]["name"], exc)
    reconcile.sync_namespace(ctx, namespace)


def scale_check_namespace(ctx: reconcile.Context, namespace: str) -> None:
    """The idle check (:func:`reconcile.scale_to_zero_pass`) of each SpeechModel of ``namespace`` that scales
    to zero with the HPA engine (each failure logged, none stopping the rest)."""
    for item in ctx.kube.list("SpeechModel", namespace):
        if not idle.wants_zero(item.get("spec")):
            continue
        try:
            reconcile.scale_to_zero_pass(ctx, item)
        except KubeError as exc:
            log.warning("idle check: SpeechModel %s/%s: %s", namespace, item["metadata"]["name"], exc)


def pull_progress_namespace(ctx: reconcile.Context, namespace: str) -> None:
    """The status of each SpeechModel of ``namespace`` that is Downloading, again
    (:func:`reconcile.refresh_pull_progress`; each failure logged, none stopping the rest)."""
    for item in ctx.kube.list("SpeechModel", namespace):
        try:
            reconcile.refresh_pull_progress(ctx, item)
        except KubeError as exc:
            log.warning("pull progress: SpeechModel %s/%s: %s", namespace, item["metadata"]["name"], exc)


class Resync:
    """A daemon thread that, for each seen namespace, runs :func:`resync_namespace` every ``interval_s``,
    :func:`scale_check_namespace` every ``scale_check_s`` and :func:`pull_progress_namespace` every
    ``pull_progress_s`` (None or 0: never), each namespace only while ``active()`` (the leader's Lease held)."""

    def __init__(self, ctx: reconcile.Context, interval_s: float, scale_check_s: float | None = None,
                 pull_progress_s: float | None = None, active: Callable[[], bool] | None = None) -> None:
        self.ctx, self.interval_s, self.scale_check_s = ctx, interval_s, scale_check_s
        self.pull_progress_s = pull_progress_s
        # Whether this replica may act now (leader.py: the holder of the Lease); a pass of a standby is skipped.
        self.active = active or (lambda: True)
        self.namespaces: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harmony-resync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        periods: dict[Job, float] = {resync_namespace: self.interval_s}
        if self.scale_check_s:
            periods[scale_check_namespace] = self.scale_check_s
        if self.pull_progress_s:
            periods[pull_progress_namespace] = self.pull_progress_s
        due = {job: time.monotonic() + period for job, period in periods.items()}
        while not self._stop.wait(max(0.0, min(due.values()) - time.monotonic())):
            for job in [job for job, at in due.items() if at <= time.monotonic()]:
                self._each_namespace(job)
                due[job] = time.monotonic() + periods[job]

    def _each_namespace(self, job: Job) -> None:
        for namespace in sorted(self.namespaces):
            if not self.active():
                log.warning("periodic pass (%s) skipped: this replica no longer leads", job.__name__)
                return
            try:
                job(self.ctx, namespace)
            except Exception:  # noqa: BLE001 - the pass must outlive any one failure
                log.exception("periodic pass (%s) over namespace %s failed", job.__name__, namespace)
