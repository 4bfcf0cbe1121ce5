"""The batch runner: a background task in every router that validates batches, runs their requests with
bounded concurrency (through ``dispatch.py``, at batch priority) and finalizes them.

Several routers share the work through leases in the database; each renews its leases while it lives and
gives them back when it stops, so a restarted router (or another) resumes a batch where it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time

from starlette.types import ASGIApp

from services.batches.area import BatchArea
from services.batches.dispatch import Dispatcher, Outcome, backoff_s
from services.batches.finalize import Finalizer, due, output_line
from services.batches.items import ItemQueue
from services.batches.metrics import BatchMetrics
from services.batches.store import Item, reclaim_batches
from services.batches.validate import validate
from services.batches.wire import OutputErrorDetail
from services.store.db import Database
from services.store.schema import batches

log = logging.getLogger("harmony.batches")


class BatchRunner:
    def __init__(self, area: BatchArea, metrics: BatchMetrics | None = None) -> None:
        self.area = area
        self.metrics = metrics
        self.settings = area.config.batches
        self.id = f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.app: ASGIApp | None = None
        self.wake = asyncio.Event()
        self.running: dict[tuple[str, int], asyncio.Task] = {}
        self.tasks: list[asyncio.Task] = []
        self.last_reclaim = 0.0
        self.ready = False

    def _open(self) -> None:
        """The database and the parts that use it (in a thread: it may migrate the schema)."""
        self.queue = ItemQueue(self.area.db, self.settings)
        expiry = self.area.config.files.expires_after_s
        self.finalizer = Finalizer(self.area.db, self.area.files, expiry)
        assert self.app is not None
        self.dispatcher = Dispatcher(self.app, self.area.files, expiry, self.area.config.server.service_timeout_s)

    def start(self, app: ASGIApp) -> None:
        self.app = app
        self.tasks = [asyncio.create_task(self._loop(), name="batch-runner")]

    async def stop(self) -> None:
        """Stop taking work, abandon what runs, and give its leases back."""
        for task in [*self.tasks, *self.running.values()]:
            task.cancel()
        await asyncio.gather(*self.tasks, *self.running.values(), return_exceptions=True)
        if hasattr(self, "dispatcher"):
            await asyncio.to_thread(self.queue.release, self.id)
            await self.dispatcher.aclose()

    async def _loop(self) -> None:
        while not hasattr(self, "dispatcher"):
            try:
                await asyncio.to_thread(self._open)
            except Exception:  # noqa: BLE001 - the database is not there yet: try again
                log.exception("batch runner: opening the store")
                await asyncio.sleep(self.settings.poll_s * 5)
        self.tasks.append(asyncio.create_task(self._heartbeat(), name="batch-leases"))
        while True:
            self.wake.clear()
            try:
                busy = await self._tick()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the runner
                log.exception("batch runner")
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(self.wake.wait(), self.settings.poll_s)
                except TimeoutError:
                    pass

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            try:
                await asyncio.to_thread(self.queue.renew, self.id)
            except Exception:  # noqa: BLE001
                log.exception("batch runner: renewing leases")

    async def _tick(self) -> bool:
        store = self.area.batches
        busy = False
        row = await asyncio.to_thread(store.claim_batch, self.id, batches.c.status == "validating")
        if row is not None:
            self._ended(await asyncio.to_thread(validate, store, row, self.id))
            busy = True
        row = await asyncio.to_thread(store.claim_batch, self.id, due(time.time()))
        if row is not None:
            status = await asyncio.to_thread(self.finalizer.finalize, row, self.id)
            log.info("batch %s %s", row.id, status)
            self._ended(status)
            busy = True
        room = self.settings.concurrency - len(self.running)
        if room > 0 and await self._engine_ready():
            for item in await asyncio.to_thread(self.queue.claim, self.id, room):
                key = (item.batch_id, item.line)
                self.running[key] = asyncio.create_task(self._run(item), name=f"batch-item-{item.line}")
                busy = True
        await self._reclaim()
        return busy and len(self.running) < self.settings.concurrency

    def _ended(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.batch_ended(status)  # counts terminal statuses only

    def opened_database(self) -> Database | None:
        """The database once the runner has opened it (the metrics read it; never opened for them)."""
        return self.area.db if hasattr(self, "queue") else None

    async def _engine_ready(self) -> bool:
        """Whether the models have come up since the router started (requests sent before would fail for want of
        them, not for what they ask)."""
        if not self.ready:
            self.ready = await self.dispatcher.ready()
        return self.ready

    async def _run(self, item: Item) -> None:
        try:
            try:
                outcome = await self.dispatcher.run(item)
            except Exception:  # noqa: BLE001 - something broke in the engine: the request goes again later
                log.exception("batch %s line %d", item.batch_id, item.line)
                outcome = Outcome(retry_after_s=backoff_s(item.attempts, None))
            await asyncio.to_thread(self._record, item, outcome)
        finally:
            self.running.pop((item.batch_id, item.line), None)
            self.wake.set()

    def _record(self, item: Item, outcome: Outcome) -> None:
        if outcome.retry_after_s is not None or outcome.response is None:
            self.queue.retry(self.id, item, outcome.retry_after_s or 1.0)
            return
        line = output_line(item.custom_id, response=outcome.response.model_dump(mode="json"))
        row = outcome.file_row
        also = None if row is None else (lambda conn: self.area.files.insert_row(conn, row))
        seconds = outcome.audio_seconds if outcome.audio_seconds is not None else item.audio_seconds
        self.queue.finish(self.id, item, line, outcome.failed, seconds, also)  # a failed request's audio is done too
        if outcome.quota_spent:  # the key has no audio left: the batch takes no more lines, it ends
            ended = self.queue.fail_pending(item.batch_id, _quota_line)
            log.info("batch %s: its key's audio quota is spent; %d requests not run end as insufficient_quota",
                     item.batch_id, ended)

    async def _reclaim(self) -> None:
        now = time.time()
        if now - self.last_reclaim < self.area.config.files.reclaim_interval_s:
            return
        self.last_reclaim = now
        files = await asyncio.to_thread(self.area.files.reclaim)
        old = await asyncio.to_thread(reclaim_batches, self.area.db, self.settings.retention_s, now)
        if files or old:
            log.info("reclaimed %d expired files and %d old batches", files, old)


def _quota_line(custom_id: str) -> dict:
    """The error line of a request a batch never ran because its key's audio quota was spent."""
    detail = OutputErrorDetail(code="insufficient_quota", message="This request was not run: the batch's API key "
                               "exceeded its audio quota (the batch takes no more requests once it has).")
    return output_line(custom_id, error=detail)
