"""The registered-voice store: records in the database, reference speech in an object store.

A voice's record (name, embedding, the converter's statistics...) is a row of the ``voices``
table in the engine's database (the router's: SQLite by default, PostgreSQL when configured);
its cleaned reference speech (FLAC) is an object under ``voices/<id>/reference.flac`` in the
object store (a directory by default, an S3-compatible bucket when configured).

Writes keep the two consistent for readers: ``add`` writes the object, then inserts the row
(a failed insert removes the object again); ``delete`` removes the row, then the object. A
crash in between can leave an object no row names (invisible, swept by ``sweep_orphans``),
never a row naming a missing object.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from services.core.contracts.errors import NotFound
from services.core.contracts.wire import RegisteredVoice
from services.store.db import Database
from services.store.objects import ObjectMissing, ObjectStore
from services.store.schema import voice_imports, voices

log = logging.getLogger("harmony.voices")

VOICE_ID = re.compile(r"^voice_[0-9a-f]{16}$")
RECORD_FIELDS = ("id", "name", "created_at", "embedding", "embedding_model", "converter", "stats",
                 "speech_seconds", "reference_files", "reference_sample_rate")


class VoiceRecord(RegisteredVoice):
    """A stored voice: what the API shows, and the converter's speaker statistics."""

    stats: dict[str, Any]
    owner_key_id: str | None = None

    def public(self) -> RegisteredVoice:
        """What the API shows: everything but the (large) statistics and the owner."""
        return RegisteredVoice.model_validate(self.model_dump(exclude={"stats", "owner_key_id"}))


def reference_key(voice_id: str) -> str:
    return f"voices/{voice_id}/reference.flac"


def _not_found(voice_id: str) -> NotFound:
    return NotFound(f"no voice '{voice_id}'", param="voice", code="voice_not_found")


class VoiceStore:
    def __init__(self, db: Database, objects: ObjectStore) -> None:
        self.db = db
        self.objects = objects

    @staticmethod
    def new_id() -> str:
        return "voice_" + secrets.token_hex(8)

    def add(self, record: VoiceRecord, reference_flac: bytes) -> VoiceRecord:
        """Object first, then the row: the API never shows a voice whose speech is missing."""
        if not VOICE_ID.match(record.id):
            raise ValueError(f"bad voice id {record.id!r}")
        key = reference_key(record.id)
        self.objects.put(key, reference_flac)
        try:
            with self.db.engine.begin() as conn:
                conn.execute(insert(voices).values(**record.model_dump(include=set(RECORD_FIELDS)),
                                                   owner_key_id=record.owner_key_id, reference_key=key))
        except IntegrityError:
            raise  # the id is taken: the object belongs to that voice's row, keep it
        except BaseException:
            self._forget_object(key)
            raise
        return record

    def get(self, voice_id: str) -> VoiceRecord:
        if not VOICE_ID.match(voice_id):
            raise _not_found(voice_id)
        with self.db.engine.connect() as conn:
            row = conn.execute(select(voices).where(voices.c.id == voice_id)).mappings().first()
        if row is None:
            raise _not_found(voice_id)
        try:
            return _record(row)
        except ValueError as exc:
            raise NotFound(f"voice '{voice_id}' cannot be used: its stored record is corrupt ({_first_error(exc)}); "
                           "delete it and register it again", param="voice", code="voice_corrupt") from None

    def reference(self, voice_id: str) -> bytes:
        with self.db.engine.connect() as conn:
            key = conn.execute(select(voices.c.reference_key).where(voices.c.id == voice_id)).scalar()
        if key is None:
            raise _not_found(voice_id)
        try:
            return self.objects.get(key)
        except ObjectMissing:
            raise _not_found(voice_id) from None

    def delete(self, voice_id: str) -> None:
        """The row first, then the object: once the row is gone the voice is gone for every reader."""
        with self.db.engine.begin() as conn:
            key = conn.execute(delete(voices).where(voices.c.id == voice_id).returning(voices.c.reference_key)
                               ).scalar()
        if key is None:
            raise _not_found(voice_id)
        self._forget_object(key)

    def list(self) -> list[VoiceRecord]:
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(voices).order_by(voices.c.created_at, voices.c.id)).mappings().all()
        return [record for record in map(_readable, rows) if record is not None]

    def sweep_orphans(self, older_than_s: float = 3600.0) -> builtins.list[str]:  # list(): a method here
        """Objects under ``voices/`` that no row names (a crash between the two writes), removed once
        older than ``older_than_s``: younger ones may belong to a registration whose row is on its way."""
        listed = self.objects.keys("voices/")
        with self.db.engine.connect() as conn:
            named = set(conn.execute(select(voices.c.reference_key)).scalars())
        cutoff = time.time() - older_than_s
        orphans = [key for key, changed in listed.items() if key not in named and changed < cutoff]
        for key in orphans:
            self._forget_object(key)
        if orphans:
            log.info("removed %d voice object(s) no record names", len(orphans))
        return orphans

    def _forget_object(self, key: str) -> None:
        try:
            self.objects.delete(key)
        except Exception:  # noqa: BLE001 - an orphan object is invisible; log and go on
            log.warning("could not remove voice object %s from %s", key, self.objects.url, exc_info=True)

    def import_directory(self, root: str | Path) -> int | None:
        """Import voices of the old layout (``<root>/<id>/voice.json`` + ``reference.flac``) once per
        directory; ``None`` if this directory was imported before or holds no voices."""
        root = Path(root).expanduser()
        source = str(root.resolve())
        with self.db.engine.connect() as conn:
            if conn.execute(select(voice_imports.c.source).where(voice_imports.c.source == source)).first():
                return None
        found = sorted(root.glob("voice_*/voice.json")) if root.is_dir() else []
        if not found:
            return None
        imported = sum(self._import_one(path) for path in found)
        try:
            with self.db.engine.begin() as conn:
                conn.execute(insert(voice_imports).values(source=source, imported_at=time.time(), voices=imported))
        except IntegrityError:  # another replica recorded the same import
            pass
        log.warning("imported %d registered voice(s) from the old voice directory %s into the store (%s, %s); "
                    "the directory is no longer read and may be removed", imported, root, self.db, self.objects.url)
        return imported

    def _import_one(self, path: Path) -> int:
        try:
            record = VoiceRecord.model_validate_json(path.read_text())
            audio = (path.parent / "reference.flac").read_bytes()
        except (OSError, ValueError):
            log.warning("skipped unreadable old voice %s", path.parent)
            return 0
        try:
            self.get(record.id)
            return 0  # already in the store
        except NotFound:
            pass
        try:
            self.add(record, audio)
        except IntegrityError:  # imported concurrently by another replica
            return 0
        return 1


def _readable(row: Any) -> VoiceRecord | None:
    """The row's record, or None (logged) for a corrupt one: one bad row must not hide every other voice."""
    try:
        return _record(row)
    except ValueError as exc:
        log.warning("skipped voice %s: its stored record is corrupt (%s)", row["id"], _first_error(exc))
        return None


def _first_error(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
    return str(exc)


def _record(row: Any) -> VoiceRecord:
    data = {name: row[name] for name in RECORD_FIELDS}
    if isinstance(data["stats"], str):  # some drivers hand JSON back as text
        data["stats"] = json.loads(data["stats"])
    return VoiceRecord(**data, owner_key_id=row["owner_key_id"])


def dump_json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
