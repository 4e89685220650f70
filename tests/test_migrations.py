"""Alembic migrations build the whole schema from an empty database, on SQLite and on PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

import service.models  # noqa: F401 - registers every table on SQLModel.metadata
from service import db


async def test_migrations_build_the_models_schema_from_an_empty_database(tmp_path, database):
    url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        await db.upgrade(engine)  # idempotent: a second start-up changes nothing

        def inspect(connection):
            context = MigrationContext.configure(connection)
            return context.get_current_revision(), compare_metadata(context, SQLModel.metadata)

        async with engine.connect() as connection:
            revision, differences = await connection.run_sync(inspect)
    finally:
        await engine.dispose()
    head = ScriptDirectory.from_config(db._alembic_config()).get_current_head()
    assert revision == head
    assert differences == [], "the models and the migrations describe the same schema"
