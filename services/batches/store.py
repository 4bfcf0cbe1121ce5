"""Batches and their requests in the database.

Every request of a batch is a row (``batch_items``): pending, then running under a lease (``lease_owner``,
``lease_until``) that one router takes with a conditional UPDATE (so two routers never run the same request;
a router that dies loses its leases when they expire), then completed or failed with its output line, in the
same transaction that moves the batch's counters. So after a crash nothing is lost and nothing counted twice.
"""

from __future__ import annotations

import builtins
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from services.batches.files import FileStore, Owner
from services.batches.wire import (
    COMPLETION_WINDOWS,
    TERMINAL,
    BatchCreate,
    BatchErrors,
    BatchList,
    BatchObject,
    RequestCounts,
)
from services.core.contracts.errors import HarmonyError, InvalidRequest, NotFound
from services.core.contracts.specs import BatchSettings
from services.store.db import Database
from services.store.schema import batch_items, batches

OBJECT_FIELDS = ("id", "endpoint", "input_file_id", "completion_window", "status", "output_file_id", "error_file_id",
                 "created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at",
                 "expired_at", "cancelling_at", "cancelled_at", "audio_seconds_total")


class Conflict(HarmonyError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "invalid_batch_status"


@dataclass(frozen=True)
class Item:
    """A request a runner took: which batch and line, what to send, and for whom."""

    batch_id: str
    line: int
    custom_id: str
    body: dict[str, Any]
    endpoint: str
    owner_key_id: str | None
    attempts: int
    audio_seconds: float | None = None


def eta_seconds(row: Any, now: float) -> float | None:
    """Time left at the pace so far: by audio seconds where the total is known, else by requests."""
    if row.status != "in_progress" or not row.in_progress_at or row.total == 0:
        return None
    elapsed = max(now - row.in_progress_at, 0.0)
    if row.audio_seconds_total and row.audio_seconds_done > 0:
        done, total = row.audio_seconds_done, row.audio_seconds_total
    else:
        done, total = row.completed + row.failed, row.total
    if done <= 0 or elapsed <= 0:
        return None
    return round(max(total - done, 0.0) * elapsed / done, 1)


def to_object(row: Any, now: float) -> BatchObject:
    values = {name: getattr(row, name) for name in OBJECT_FIELDS}
    return BatchObject(**values, errors=BatchErrors.model_validate(row.errors) if row.errors else None,
                       metadata=row._mapping["metadata"],
                       request_counts=RequestCounts(total=row.total, completed=row.completed, failed=row.failed),
                       audio_seconds_done=round(row.audio_seconds_done, 3), eta_seconds=eta_seconds(row, now))


def _visible(query: Any, owner: Owner) -> Any:
    clause = owner.clause(batches.c.owner_key_id)
    return query if clause is None else query.where(clause)


class BatchStore:
    def __init__(self, db: Database, files: FileStore, settings: BatchSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.files = files
        self.settings = settings
        self.clock = clock

    # --- the API's side -------------------------------------------------------------------------------------

    def create(self, request: BatchCreate, owner: Owner, owner_key_id: str | None) -> BatchObject:
        source = self.files.get(request.input_file_id, owner)  # 404 unless the caller may read it
        if source.purpose != "batch":
            raise InvalidRequest(f"file {source.id} has purpose '{source.purpose}'; a batch's input file needs "
                                 "purpose 'batch'", param="input_file_id")
        now = int(self.clock())
        batch_id = "batch_" + secrets.token_hex(12)
        with self.db.engine.begin() as conn:
            conn.execute(insert(batches).values(
                id=batch_id, endpoint=request.endpoint, input_file_id=source.id, status="validating",
                completion_window=request.completion_window, owner_key_id=owner_key_id, metadata=request.metadata,
                created_at=now, expires_at=now + COMPLETION_WINDOWS[request.completion_window]))
        return self.get(batch_id, Owner(None))

    def row(self, batch_id: str, owner: Owner) -> Any:
        with self.db.engine.connect() as conn:
            row = conn.execute(_visible(select(batches).where(batches.c.id == batch_id), owner)).first()
        if row is None:
            raise NotFound(f"No such Batch object: {batch_id}", param="batch_id", code="batch_not_found")
        return row

    def get(self, batch_id: str, owner: Owner) -> BatchObject:
        return to_object(self.row(batch_id, owner), self.clock())

    def list(self, owner: Owner, limit: int, after: str | None) -> BatchList:
        query = _visible(select(batches), owner)
        if after:
            cursor = self.row(after, owner)
            query = query.where(or_(batches.c.created_at < cursor.created_at,
                                    and_(batches.c.created_at == cursor.created_at, batches.c.id < cursor.id)))
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(batches.c.created_at.desc(), batches.c.id.desc())
                                .limit(limit + 1)).all()
        data = [to_object(r, self.clock()) for r in rows[:limit]]
        return BatchList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                         has_more=len(rows) > limit)

    def cancel(self, batch_id: str, owner: Owner) -> BatchObject:
        """``validating`` or ``in_progress`` to ``cancelling``; any other status (``cancelling`` and ``cancelled``
        included, as OpenAI answers) is a 409 that names it. The conditional UPDATE decides a race of two cancels."""
        row = self.row(batch_id, owner)
        with self.db.engine.begin() as conn:
            moved = conn.execute(update(batches).where(batches.c.id == batch_id,
                                                       batches.c.status.in_(["validating", "in_progress"]))
                                 .values(status="cancelling", cancelling_at=int(self.clock()),
                                         version=batches.c.version + 1)).rowcount
        if not moved:
            status = self.row(batch_id, owner).status if row.status in ("validating", "in_progress") else row.status
            raise Conflict(f"Cannot cancel a batch with status '{status}': only a validating or in-progress batch "
                           "can be cancelled", param="batch_id", headers={"x-should-retry": "false"})
        return self.get(batch_id, owner)

    def version(self, batch_id: str) -> tuple[int, str]:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(batches.c.version, batches.c.status).where(batches.c.id == batch_id)).first()
        return (row.version, row.status) if row else (-1, "failed")

    # --- the runner's side: batches ---------------------------------------------------------------------------

    def claim_batch(self, runner: str, where: Any) -> Any:
        """Take the lease of one batch matching ``where`` (for validation or finalization); its row, or None."""
        now = self.clock()
        free = or_(batches.c.lease_until.is_(None), batches.c.lease_until < now, batches.c.lease_owner == runner)
        with self.db.engine.connect() as conn:
            candidates = conn.execute(select(batches.c.id).where(where, free).order_by(batches.c.created_at)
                                      .limit(8)).scalars().all()
        for batch_id in candidates:
            with self.db.engine.begin() as conn:
                taken = conn.execute(update(batches).where(batches.c.id == batch_id, where, free)
                                     .values(lease_owner=runner, lease_until=now + self.settings.lease_s)).rowcount
                if taken == 1:
                    return conn.execute(select(batches).where(batches.c.id == batch_id)).first()
        return None

    # builtins.list: the method list() shadows the type in the class's body
    def start(self, batch_id: str, runner: str, items: builtins.list[dict[str, Any]],
              audio_total: float | None) -> None:
        """The validated requests, and the batch in progress, in one transaction (a crash validates it again)."""
        with self.db.engine.begin() as conn:
            if conn.execute(select(func.count()).select_from(batch_items)
                            .where(batch_items.c.batch_id == batch_id)).scalar_one() == 0 and items:
                conn.execute(insert(batch_items), [{**item, "batch_id": batch_id, "status": "pending"}
                                                   for item in items])
            now = int(self.clock())
            values: dict[str, Any] = dict(total=len(items), audio_seconds_total=audio_total, in_progress_at=now,
                                          lease_owner=None, lease_until=None, version=batches.c.version + 1)
            conn.execute(update(batches).where(batches.c.id == batch_id, batches.c.lease_owner == runner)
                         .values(**values, status=_case_status("validating", "in_progress")))

    def fail(self, batch_id: str, errors: BatchErrors) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(update(batches).where(batches.c.id == batch_id, batches.c.status.not_in(TERMINAL))
                         .values(status="failed", failed_at=int(self.clock()), errors=errors.model_dump(),
                                 lease_owner=None, lease_until=None, version=batches.c.version + 1))


def _case_status(old: str, new: str) -> Any:
    """``status``: ``new`` where it is ``old``, else unchanged (a batch cancelled while it was validated)."""
    from sqlalchemy import case

    return case((batches.c.status == old, new), else_=batches.c.status)


def reclaim_batches(db: Database, retention_s: float, now: float) -> int:
    """Delete the records of batches that ended more than ``retention_s`` ago (their files expire on their own)."""
    ended = func.coalesce(batches.c.completed_at, batches.c.failed_at, batches.c.expired_at, batches.c.cancelled_at)
    with db.engine.begin() as conn:
        old = conn.execute(select(batches.c.id).where(batches.c.status.in_(TERMINAL), ended < now - retention_s)
                           ).scalars().all()
        if old:
            conn.execute(delete(batch_items).where(batch_items.c.batch_id.in_(old)))
            conn.execute(delete(batches).where(batches.c.id.in_(old)))
    return len(old)
