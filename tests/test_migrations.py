"""Alembic migrations build the whole schema from an empty database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
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


def test_the_head_read_from_the_files_is_alembics():
    """The CLI's shortcut (`db.schema_head`, no Alembic import) names the head Alembic would migrate to."""
    script = ScriptDirectory.from_config(db._alembic_config())
    assert script.get_heads() == [db.schema_head()]


async def test_a_database_behind_the_head_is_upgraded_and_a_current_one_is_left_alone(tmp_path, database):
    url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}"
    script = ScriptDirectory.from_config(db._alembic_config())
    head = script.get_current_head()
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    engine = db.create_engine(url)
    try:
        assert await db.stored_revisions(engine) is None  # a new database: no alembic_version yet
        await db.upgrade(engine, previous)
        assert await db.stored_revisions(engine) == {previous}
        await db.upgrade_if_behind(engine)
        assert await db.stored_revisions(engine) == {head}
        async with engine.begin() as connection:  # an unknown revision recorded: the shortcut must not apply
            await connection.execute(text("UPDATE alembic_version SET version_num = 'not-ours'"))
        with pytest.raises(CommandError, match="not-ours"):  # Alembic refuses a revision it does not know
            await db.upgrade_if_behind(engine)
    finally:
        await engine.dispose()
