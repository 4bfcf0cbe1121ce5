"""The periodic pass: every namespace the operator has seen a SpeechModel or SpeechRoute in, re-applied.

It replaces kopf timers, which put a finalizer on every object they run for (and with it
the hang of `helm uninstall`, which removes the operator first). Events do the real work
(an edited or deleted child is repaired at its event); this pass is the safety net for a
missed one, and it keeps statuses fresh.
"""

from __future__ import annotations

import logging
import threading

import kopf
from . import reconcile
from .kube import KubeError

log = logging.getLogger("harmony.operator")


def resync_namespace(ctx: reconcile.Context, namespace: str) -> None:
    """Re-apply every SpeechModel of ``namespace`` (each failure logged, none stopping the rest), then sync it."""
    for item in ctx.kube.list("SpeechModel", namespace):
        try:
            reconcile.reconcile_model(ctx, item)
        except (kopf.PermanentError, kopf.TemporaryError, KubeError) as exc:
            log.warning("periodic pass: SpeechModel %s/%s: %s", namespace, item["metadata"]["name"], exc)
    reconcile.sync_namespace(ctx, namespace)


class Resync:
    """A daemon thread that runs :func:`resync_namespace` for each seen namespace every ``interval_s``."""

    def __init__(self, ctx: reconcile.Context, interval_s: float) -> None:
        self.ctx, self.interval_s = ctx, interval_s
        self.namespaces: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harmony-resync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for namespace in sorted(self.namespaces):
                try:
                    resync_namespace(self.ctx, namespace)
                except Exception:  # noqa: BLE001 - the pass must outlive any one failure
                    log.exception("periodic pass over namespace %s failed", namespace)
