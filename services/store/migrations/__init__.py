"""Alembic migrations of the engine's database, shipped inside the package."""
