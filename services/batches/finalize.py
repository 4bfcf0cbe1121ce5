"""A batch's end: its output and error files written, and its terminal status, in one transaction.

Which end: cancelled (it was cancelled; requests not run are in neither file), expired (its completion window
passed; requests not run go to the error file as ``batch_expired``), else completed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update

from services.batches.files import FileStore, derived_file_id
from services.batches.wire import OutputErrorDetail, OutputLine
from services.store.db import Database
from services.store.schema import batch_items, batches

UNFINISHED = ("pending", "running")


class LeaseLost(RuntimeError):
    """Another router took the batch (this one stalled past its lease): nothing of this attempt is kept."""


def due(now: float) -> Any:
    """The batches ready to end: every request done, cancelled with none running, past their window, or found
    half-finalized (a router died finalizing it)."""
    items = batch_items.c
    unfinished = exists().where(items.batch_id == batches.c.id, items.status.in_(UNFINISHED))
    running = exists().where(items.batch_id == batches.c.id, items.status == "running", items.lease_until > now)
    return or_(and_(batches.c.status.in_(["validating", "in_progress"]), batches.c.expires_at <= now),
               and_(batches.c.status == "in_progress", ~unfinished),
               and_(batches.c.status == "cancelling", ~running),
               batches.c.status == "finalizing")


def output_line(custom_id: str, response: dict | None = None, error: OutputErrorDetail | None = None) -> dict:
    """One line of an output or error file, with a fresh ``batch_req_`` id (pure)."""
    line = OutputLine(id="batch_req_" + secrets.token_hex(12), custom_id=custom_id, response=response, error=error)
    return line.model_dump(mode="json")


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


class Finalizer:
    def __init__(self, db: Database, files: FileStore, file_expiry_s: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.files = files
        self.file_expiry_s = file_expiry_s
        self.clock = clock

    def _target(self, row: Any) -> str:
        if row.cancelling_at is not None:
            return "cancelled"
        with self.db.engine.connect() as conn:
            left = conn.execute(select(func.count()).select_from(batch_items).where(
                batch_items.c.batch_id == row.id, batch_items.c.status.in_(UNFINISHED))).scalar_one()
        return "expired" if left or row.in_progress_at is None else "completed"

    def _lines(self, row: Any, target: str) -> tuple[list[dict], list[dict], int]:
        with self.db.engine.connect() as conn:
            items = conn.execute(select(batch_items.c.custom_id, batch_items.c.status, batch_items.c.result)
                                 .where(batch_items.c.batch_id == row.id).order_by(batch_items.c.line)).all()
        output = [item.result for item in items if item.status == "completed"]
        errors = [item.result for item in items if item.status == "failed"]
        if target == "expired":
            detail = OutputErrorDetail(code="batch_expired",
                                       message="This request could not be executed before the completion window "
                                               "expired.")
            errors += [output_line(item.custom_id, error=detail) for item in items if item.status in UNFINISHED]
        return output, errors, sum(item.status in UNFINISHED for item in items) if target == "expired" else 0

    def finalize(self, row: Any, runner: str) -> str:
        target = self._target(row)
        now = int(self.clock())
        if target == "completed" and row.status != "finalizing":
            with self.db.engine.begin() as conn:
                conn.execute(update(batches).where(batches.c.id == row.id, batches.c.lease_owner == runner)
                             .values(status="finalizing", finalizing_at=now, version=batches.c.version + 1))
        output, errors, expired = self._lines(row, target)
        with self.db.engine.begin() as conn:
            ids = {}
            for kind, lines in (("output", output), ("error", errors)):
                if lines:
                    file_id = derived_file_id(row.id, kind)
                    values = self.files.row_values(file_id, f"{row.id}_{kind}.jsonl", "batch_output",
                                                   len(data := jsonl(lines)), row.owner_key_id, self.file_expiry_s)
                    self.files.insert_in(conn, data, values)
                    ids[kind] = file_id
            ended = conn.execute(update(batches).where(batches.c.id == row.id, batches.c.lease_owner == runner).values(
                {"status": target, f"{target}_at": now, "output_file_id": ids.get("output"),
                 "error_file_id": ids.get("error"), "failed": batches.c.failed + expired, "lease_owner": None,
                 "lease_until": None, "version": batches.c.version + 1})).rowcount
            if ended != 1:
                raise LeaseLost(f"batch {row.id} was taken by another router while it was finalized")
            conn.execute(delete(batch_items).where(batch_items.c.batch_id == row.id))
        return target
