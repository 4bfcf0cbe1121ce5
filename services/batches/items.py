"""A batch's requests as a work queue shared by every router: claimed under a lease, finished once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from services.batches.store import Item
from services.core.contracts.specs import BatchSettings
from services.store.db import Database
from services.store.schema import batch_items, batches


class ItemQueue:
    def __init__(self, db: Database, settings: BatchSettings, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.settings = settings
        self.clock = clock

    def _ready(self, now: float) -> Any:
        """A request no router is running: pending and due, or running under a lease that ran out."""
        return or_(and_(batch_items.c.status == "pending", batch_items.c.next_try_at <= now),
                   and_(batch_items.c.status == "running", batch_items.c.lease_until < now))

    def claim(self, runner: str, count: int) -> list[Item]:
        """Take up to ``count`` requests of batches in progress (oldest batch first, in line order)."""
        now = self.clock()
        query = (select(batch_items.c.batch_id, batch_items.c.line)
                 .join(batches, batches.c.id == batch_items.c.batch_id)
                 .where(batches.c.status == "in_progress", self._ready(now))
                 .order_by(batches.c.created_at, batch_items.c.batch_id, batch_items.c.line).limit(count))
        with self.db.engine.connect() as conn:
            candidates = conn.execute(query).all()
        taken = []
        for batch_id, line in candidates:  # one conditional UPDATE each: of two routers, one wins each row
            with self.db.engine.begin() as conn:
                won = conn.execute(update(batch_items)
                                   .where(batch_items.c.batch_id == batch_id, batch_items.c.line == line,
                                          self._ready(now))
                                   .values(status="running", lease_owner=runner,
                                           lease_until=now + self.settings.lease_s,
                                           attempts=batch_items.c.attempts + 1)).rowcount
            if won == 1:
                taken.append((batch_id, line))
        return self._items(taken)

    def _items(self, keys: list[tuple[str, int]]) -> list[Item]:
        items = []
        with self.db.engine.connect() as conn:
            for batch_id, line in keys:
                row = conn.execute(select(batch_items, batches.c.endpoint, batches.c.owner_key_id)
                                   .join(batches, batches.c.id == batch_items.c.batch_id)
                                   .where(batch_items.c.batch_id == batch_id, batch_items.c.line == line)).one()
                items.append(Item(batch_id=batch_id, line=line, custom_id=row.custom_id, body=dict(row.body),
                                  endpoint=row.endpoint, owner_key_id=row.owner_key_id, attempts=row.attempts,
                                  audio_seconds=row.audio_seconds))
        return items

    def renew(self, runner: str) -> None:
        """Extend every lease ``runner`` holds, on requests and on batches (it is alive)."""
        until = self.clock() + self.settings.lease_s
        with self.db.engine.begin() as conn:
            conn.execute(update(batch_items).where(batch_items.c.lease_owner == runner,
                                                   batch_items.c.status == "running").values(lease_until=until))
            conn.execute(update(batches).where(batches.c.lease_owner == runner).values(lease_until=until))

    def finish(self, runner: str, item: Item, result: dict[str, Any], failed: bool, audio_seconds: float | None,
               also: Callable[[Connection], None] | None = None) -> bool:
        """Record a request's output line and count it, in one transaction; False (nothing written) when another
        router has taken it meanwhile."""
        with self.db.engine.begin() as conn:
            done = conn.execute(update(batch_items)
                                .where(batch_items.c.batch_id == item.batch_id, batch_items.c.line == item.line,
                                       batch_items.c.status == "running", batch_items.c.lease_owner == runner)
                                .values(status="failed" if failed else "completed", result=result,
                                        audio_seconds=audio_seconds, lease_owner=None, lease_until=None)).rowcount
            if done != 1:
                return False
            if also is not None:
                also(conn)
            counter = batches.c.failed if failed else batches.c.completed
            conn.execute(update(batches).where(batches.c.id == item.batch_id)
                         .values({counter: counter + 1, batches.c.version: batches.c.version + 1,
                                  batches.c.audio_seconds_done: batches.c.audio_seconds_done + (audio_seconds or 0.0)}))
        return True

    def retry(self, runner: str, item: Item, delay_s: float) -> None:
        """Give the request back, to be tried again in ``delay_s`` (the engine was busy)."""
        with self.db.engine.begin() as conn:
            conn.execute(update(batch_items)
                         .where(batch_items.c.batch_id == item.batch_id, batch_items.c.line == item.line,
                                batch_items.c.status == "running", batch_items.c.lease_owner == runner)
                         .values(status="pending", next_try_at=self.clock() + delay_s, lease_owner=None,
                                 lease_until=None))

    def fail_pending(self, batch_id: str, line: Callable[[str], dict[str, Any]]) -> int:
        """End every request of the batch not yet taken as failed, with ``line(custom_id)`` as its error line, and
        count them, in one transaction (a request another router took meanwhile is left to it). How many."""
        with self.db.engine.begin() as conn:
            pending = conn.execute(select(batch_items.c.line, batch_items.c.custom_id).where(
                batch_items.c.batch_id == batch_id, batch_items.c.status == "pending")).all()
            failed = 0
            for number, custom_id in pending:
                failed += conn.execute(update(batch_items).where(
                    batch_items.c.batch_id == batch_id, batch_items.c.line == number,
                    batch_items.c.status == "pending").values(status="failed", result=line(custom_id))).rowcount
            if failed:
                conn.execute(update(batches).where(batches.c.id == batch_id)
                             .values(failed=batches.c.failed + failed, version=batches.c.version + 1))
        return failed

    def release(self, runner: str) -> None:
        """Give back everything ``runner`` holds (it is stopping): another router, or this one restarted, takes it
        at once rather than when the lease runs out."""
        with self.db.engine.begin() as conn:
            conn.execute(update(batch_items).where(batch_items.c.lease_owner == runner,
                                                   batch_items.c.status == "running")
                         .values(status="pending", lease_owner=None, lease_until=None))
            conn.execute(update(batches).where(batches.c.lease_owner == runner)
                         .values(lease_owner=None, lease_until=None))
