"""The engine's database: API keys, rate-limit windows, usage, the audit trail, voice ownership, registered
voices (their speech in an object store: ``services.store.objects``).

SQLAlchemy Core over SQLite (the default, a file under the data directory) or PostgreSQL
(``database.url``); the schema is changed only by the Alembic migrations shipped in
``services/store/migrations``, applied at start-up and by ``harmony db upgrade``.
"""

from services.store.db import Database, database_url, open_database

__all__ = ["Database", "database_url", "open_database"]
