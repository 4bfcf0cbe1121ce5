"""The Files API's store: a record per file in the database, its bytes in the object store.

A file belongs to the API key that made it (none without keys); a key sees only its own files, an admin key
every file, and without keys every file is shared. Expired files are reclaimed by ``reclaim``. A file's name is
display metadata, cleaned (``filenames.py``); its bytes are under a key made of its id, and go in and out in chunks.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from sqlalchemy import Connection, and_, delete, insert, or_, select

from services.batches.filenames import clean_filename
from services.batches.wire import FileList, FileObject
from services.core.contracts.errors import NotFound
from services.store.db import Database
from services.store.objects import ObjectChunks, ObjectMissing, ObjectStore
from services.store.schema import files

PREFIX = "batch-files/"


class Owner:
    """Whose files a request may see: ``key_id`` None and ``admin`` True means everyone's."""

    def __init__(self, key_id: str | None, admin: bool = False) -> None:
        self.key_id = key_id
        self.admin = admin or key_id is None

    def clause(self, column: Any) -> Any:
        return None if self.admin else column == self.key_id


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def derived_file_id(*parts: str) -> str:
    """A file id that the same parts always give (an output made twice after a crash is the same file)."""
    return "file-" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:24]


def _gone(file_id: str) -> NotFound:
    return NotFound(f"the content of file {file_id} is gone", param="file_id", code="file_not_found")


def _to_object(row: Any) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, expires_at=row.expires_at,
                      filename=row.filename, purpose=row.purpose)


class FileStore:
    def __init__(self, db: Database, objects: ObjectStore, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.objects = objects
        self.clock = clock

    def row_values(self, file_id: str, filename: str, purpose: str, size: int, owner_key_id: str | None,
                   expires_after_s: int | None) -> dict[str, Any]:
        now = int(self.clock())
        return dict(id=file_id, filename=clean_filename(filename), purpose=purpose, bytes=size, created_at=now,
                    expires_at=now + expires_after_s if expires_after_s else None, owner_key_id=owner_key_id,
                    object_key=PREFIX + file_id)

    def create(self, data: bytes, filename: str, purpose: str, owner_key_id: str | None,
               expires_after_s: int | None) -> FileObject:
        values = self.row_values(new_file_id(), filename, purpose, len(data), owner_key_id, expires_after_s)
        self.objects.put(values["object_key"], data)  # bytes first: a row always has them
        return self._add(values)

    def create_from(self, source: BinaryIO, filename: str, purpose: str, owner_key_id: str | None,
                    expires_after_s: int | None) -> FileObject:
        """``create`` of an upload spooled to a file (all of it), copied to the store in chunks."""
        size = source.seek(0, 2)
        values = self.row_values(new_file_id(), filename, purpose, size, owner_key_id, expires_after_s)
        source.seek(0)
        self.objects.put_file(values["object_key"], source)
        return self._add(values)

    def _add(self, values: dict[str, Any]) -> FileObject:
        with self.db.engine.begin() as conn:
            conn.execute(insert(files).values(**values))
        return self.get(values["id"], Owner(None))

    def insert_in(self, conn: Connection, data: bytes, values: dict[str, Any]) -> None:
        """Store ``data`` and add its row within the caller's transaction (the same id may come again: replaced)."""
        self.objects.put(values["object_key"], data)
        self.insert_row(conn, values)

    @staticmethod
    def insert_row(conn: Connection, values: dict[str, Any]) -> None:
        conn.execute(delete(files).where(files.c.id == values["id"]))
        conn.execute(insert(files).values(**values))

    def _row(self, file_id: str, owner: Owner) -> Any:
        query = select(files).where(files.c.id == file_id)
        if (clause := owner.clause(files.c.owner_key_id)) is not None:
            query = query.where(clause)
        with self.db.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or (row.expires_at is not None and row.expires_at <= self.clock()):
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return row

    def get(self, file_id: str, owner: Owner) -> FileObject:
        return _to_object(self._row(file_id, owner))

    def content(self, file_id: str, owner: Owner) -> tuple[FileObject, bytes]:
        """The file's record and all its bytes (for the engine's own reads: an audio file to decode, an input
        file to check); downloads use ``stream``."""
        row = self._row(file_id, owner)
        try:
            return _to_object(row), self.objects.get(row.object_key)
        except ObjectMissing:
            raise _gone(file_id) from None

    def stream(self, file_id: str, owner: Owner, start: int = 0, length: int | None = None) \
            -> tuple[FileObject, ObjectChunks]:
        """The file's record and ``length`` of its bytes from ``start`` (all: None), as chunks read on demand."""
        row = self._row(file_id, owner)
        try:
            return _to_object(row), self.objects.open(row.object_key, start, length)
        except ObjectMissing:
            raise _gone(file_id) from None

    def delete(self, file_id: str, owner: Owner) -> None:
        row = self._row(file_id, owner)
        with self.db.engine.begin() as conn:
            conn.execute(delete(files).where(files.c.id == file_id))
        self.objects.delete(row.object_key)  # row first: a reader never finds a row without bytes

    def list(self, owner: Owner, purpose: str | None, limit: int, after: str | None, order: str) -> FileList:
        query = select(files).where(or_(files.c.expires_at.is_(None), files.c.expires_at > self.clock()))
        if (clause := owner.clause(files.c.owner_key_id)) is not None:
            query = query.where(clause)
        if purpose:
            query = query.where(files.c.purpose == purpose)
        descending = order != "asc"
        if after:
            cursor = self._row(after, owner)
            earlier = (files.c.created_at < cursor.created_at) if descending else \
                (files.c.created_at > cursor.created_at)
            tie = files.c.id < cursor.id if descending else files.c.id > cursor.id
            query = query.where(or_(earlier, and_(files.c.created_at == cursor.created_at, tie)))
        keys = (files.c.created_at.desc(), files.c.id.desc()) if descending else (files.c.created_at, files.c.id)
        with self.db.engine.connect() as conn:
            rows = conn.execute(query.order_by(*keys).limit(limit + 1)).all()
        data = [_to_object(r) for r in rows[:limit]]
        return FileList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                        has_more=len(rows) > limit)

    def reclaim(self) -> int:
        """Delete expired files (row, then bytes), and bytes no row names (a crash between the two); the count."""
        now = self.clock()
        with self.db.engine.begin() as conn:
            expired = conn.execute(select(files.c.id, files.c.object_key)
                                   .where(files.c.expires_at.is_not(None), files.c.expires_at <= now)).all()
            if expired:
                conn.execute(delete(files).where(files.c.id.in_([r.id for r in expired])))
        for row in expired:
            self.objects.delete(row.object_key)
        with self.db.engine.connect() as conn:
            known = {r.object_key for r in conn.execute(select(files.c.object_key))}
        stale = [k for k, changed in self.objects.keys(PREFIX).items() if k not in known and changed < now - 3600]
        for key in stale:  # an hour old: never bytes whose row is being written right now
            self.objects.delete(key)
        return len(expired) + len(stale)
