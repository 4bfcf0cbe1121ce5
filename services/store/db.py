"""Connecting to the database and bringing its schema up to date."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from services.core.contracts.specs import HarmonyConfig
from services.store.errors import count_database_errors

MIGRATIONS = "services.store:migrations"


def database_url(config: HarmonyConfig | None = None) -> str:
    """``database.url``, else $HARMONY_DATABASE_URL, else SQLite in the data directory."""
    from services.store.paths import data_dir

    url = (config.database.url if config else None) or os.environ.get("HARMONY_DATABASE_URL")
    if not url:
        return f"sqlite:///{data_dir(config.data_dir if config else None) / 'harmony.db'}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # psycopg 3 is the driver shipped
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")     # readers do not block the writer (several routers, the CLI)
    cursor.execute("PRAGMA busy_timeout=10000")   # wait for a writer rather than fail with 'database is locked'
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 10})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
        count_database_errors(self.engine)  # harmony_store_errors_total{store="database"}

    def upgrade(self, revision: str = "head") -> None:
        """Apply the shipped Alembic migrations (PostgreSQL: under an advisory lock, so that replicas
        starting together migrate once)."""
        from alembic import command

        with self.engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def tables(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string(hide_password=True)})"


def _alembic_config():
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def open_database(config: HarmonyConfig | None = None, url: str | None = None, upgrade: bool = True) -> Database:
    database = Database(url or database_url(config))
    if upgrade:
        database.upgrade()
    return database


def migrations_dir() -> Path:
    return Path(str(resources.files("services.store").joinpath("migrations")))
