"""What the Files and Batch API share in one router: the database and object store, opened on first use."""

from __future__ import annotations

import threading
from functools import cached_property

from services.batches.files import FileStore, Owner
from services.core.contracts.errors import ServiceUnavailable
from services.core.contracts.specs import HarmonyConfig
from services.store.db import Database, open_database
from services.store.errors import CountedObjectStore
from services.store.objects import (
    ObjectMissing,
    ObjectStore,
    missing_required_store,
    object_store_settings,
    open_object_store,
)


class BatchArea:
    def __init__(self, config: HarmonyConfig, db: Database | None = None) -> None:
        self.config = config
        self._db = db
        self._owns_db = db is None
        self._lock = threading.Lock()

    @property
    def db(self) -> Database:
        with self._lock:  # opened (and migrated) once, in whichever thread asks first
            if self._db is None:
                self._db = open_database(self.config)
            return self._db

    def missing_object_store(self) -> str | None:
        """Why the Files and Batch API cannot run here (a pod without a shared object store), or None."""
        return missing_required_store(object_store_settings(self.config.object_store), "files and batches")

    @cached_property
    def objects(self) -> ObjectStore:
        missing = self.missing_object_store()
        if missing:
            raise ServiceUnavailable(missing, code="object_store_missing")
        store = open_object_store(object_store_settings(self.config.object_store), self.config.data_dir)
        return CountedObjectStore(store, ObjectMissing)  # its failures in harmony_store_errors_total

    @cached_property
    def files(self) -> FileStore:
        return FileStore(self.db, self.objects)

    @cached_property
    def batches(self):  # -> BatchStore (imported here: the store imports this module's neighbours)
        from services.batches.store import BatchStore

        return BatchStore(self.db, self.files, self.config.batches)

    def close(self) -> None:
        if self._owns_db and self._db is not None:
            self._db.dispose()


def request_owner() -> Owner:
    """The current request's owner: its API key (admins see everyone's), or everyone without keys."""
    from services.auth.guard import current

    record = current()
    key = record.key if record is not None else None
    return Owner(key.id, key.admin) if key is not None else Owner(None)


def owner_key_id() -> str | None:
    from services.auth.guard import current

    record = current()
    return record.key.id if record is not None and record.key is not None else None
