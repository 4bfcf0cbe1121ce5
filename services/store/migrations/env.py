"""Alembic's environment: migrations run on the connection ``Database.upgrade`` hands over, or on
``sqlalchemy.url`` when the alembic command line is used."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from services.store.schema import metadata

ADVISORY_LOCK = 7_120_443_001  # any constant: one harmony migration at a time per PostgreSQL database


def _run(connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK})
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: neither a connection nor sqlalchemy.url was given")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
