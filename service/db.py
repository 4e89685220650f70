"""Database engine, sessions and schema migrations.

The engine is built from settings by `create_engine()`; nothing is created at import time.
Schema changes go through Alembic (`service/migrations`), run at start-up unless disabled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")
MIGRATION_LOCK_KEY = 0x686F6C6467617465  # "holdgate"


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL and a busy timeout so readers never block the writer."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg2":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_async_engine(url, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on error."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def _alembic_config(connection=None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the schema up to `revision` (idempotent).

    On PostgreSQL, replicas starting together take turns: a transaction-scoped advisory lock
    serializes the migration runs, and the ones that wait find the schema already current.
    """
    from alembic import command

    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        await conn.run_sync(lambda sync_conn: command.upgrade(_alembic_config(sync_conn), revision))


def run_offline(
    database_url: str, work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]], *, migrate: bool = True
) -> T:
    """For CLI commands: open the database (migrating it first), run `work(sessions)`, close it."""

    async def run() -> T:
        engine = create_engine(database_url)
        try:
            if migrate:
                await upgrade(engine)
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run_in_session(database_url: str, work: Callable[[AsyncSession], Awaitable[T]], *, migrate: bool = True) -> T:
    """For CLI commands: `work(session)` in one committed unit of work (see `run_offline`)."""

    async def in_scope(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with session_scope(sessions) as session:
            return await work(session)

    return run_offline(database_url, in_scope, migrate=migrate)
