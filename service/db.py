"""Database engine, sessions and schema migrations.

The engine is built from settings by `create_engine()`; nothing is created at import time.
Schema changes go through Alembic (`service/migrations`), run at start-up unless disabled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSIONS_DIR = MIGRATIONS_DIR / "versions"
T = TypeVar("T")
MIGRATION_LOCK_KEY = 0x686F6C6467617465  # "holdgate"
logger = logging.getLogger(__name__)


class DatabaseMissing(RuntimeError):
    """A command that only uses the database found none where the settings point (nothing was created)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"no holdgate database at {path}: is this the right directory? Set HOLDGATE_DATA_DIR (or "
            "HOLDGATE_DATABASE_URL) to where `holdgate serve` keeps it, or create one here with `holdgate db upgrade`"
        )


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite `url`, resolved; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database).resolve()


def require_existing(url: str) -> None:
    """Raise `DatabaseMissing` if `url` is a SQLite file that does not exist (other databases: no check)."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise DatabaseMissing(path)


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url`; SQLite gets WAL and a busy timeout so readers never block the writer.

    A SQLite file is created here, private to its owner (see `_private_sqlite_file`).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            _private_sqlite_file(path)
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


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600, in a directory created 0700; warn about looser existing ones.

    SQLite would create the file (and its -wal, -shm and -journal files, which take the main file's
    mode) readable by everyone under the usual umask, and the database holds the audit's arguments and
    every decision. What holdgate creates is private; an existing directory or file with looser modes
    is the user's choice, so it is left alone with a warning that says how to tighten it.
    """
    directory = path.parent
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
    elif directory.stat().st_mode & 0o077:
        logger.warning(
            "the database directory %s is open to other users (mode %s); `chmod 700 %s` makes it private",
            directory,
            oct(directory.stat().st_mode & 0o777),
            directory,
        )
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # an empty file is an empty database
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning(
                "the database %s is readable by other users (mode %s); `chmod 600 %s*` makes it private",
                path,
                oct(mode),
                path,
            )


RETURNING_ROWS: dict[str, Any] = {"populate_existing": True, "synchronize_session": False}
"""For `UPDATE … RETURNING` of whole rows (the compare-and-sets of decisions and tasks): the rows come back fresh,
so the session's other objects need no re-evaluation (which costs O(objects in the session) per statement)."""


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


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=(.*)$", re.MULTILINE)
_QUOTED = re.compile(r"""["']([^"']+)["']""")


@cache
def schema_head() -> str | None:
    """The migrations' one head revision, read from the version files without importing Alembic.

    Alembic costs a CLI command ~0.2 s of imports before it can say "nothing to do"; the files say the same in a
    millisecond. Each file's module-level `revision = "…"` and `down_revision = …` lines are read (a string,
    None or a tuple of strings, as Alembic writes them); the head is the one revision no other file revises.
    None when that is not clear-cut (a file without exactly one revision, several heads, no files): then
    Alembic decides, as before. `tests/test_migrations.py` keeps this equal to Alembic's own head.
    """
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in sorted(VERSIONS_DIR.glob("*.py")):
        if path.name.startswith("__"):
            continue
        found: dict[str, list[str]] = {}
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).extend(_QUOTED.findall(value))
        if len(found.get("revision", [])) != 1:
            return None
        revisions.add(found["revision"][0])
        revised.update(found.get("down_revision", []))
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


async def stored_revisions(engine: AsyncEngine) -> set[str] | None:
    """The revisions Alembic recorded in the database (`alembic_version`); None if it cannot be read (a new
    database has no such table)."""
    try:
        async with engine.connect() as conn:
            return {row[0] for row in await conn.execute(text("SELECT version_num FROM alembic_version"))}
    except SQLAlchemyError:
        return None


async def upgrade_if_behind(engine: AsyncEngine) -> None:
    """`upgrade` unless the database already records the migrations' head: one query on the usual path.

    For the CLI, whose every command checks the schema (`HOLDGATE_RUN_MIGRATIONS`): a current database is
    left alone without importing Alembic; anything else (behind, new, several heads, unreadable) goes through
    Alembic exactly as before.
    """
    head = schema_head()
    if head is not None and await stored_revisions(engine) == {head}:
        return
    await upgrade(engine)


def run_offline(
    database_url: str,
    work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]],
    *,
    migrate: bool = True,
    create: bool = False,
) -> T:
    """For CLI commands: open the database (migrating it first if it is behind), run `work(sessions)`, close it.

    A SQLite database that does not exist is refused (`DatabaseMissing`) unless `create`: a command
    run in the wrong directory must not quietly start a new, empty database there.
    """
    if not create:
        require_existing(database_url)

    async def run() -> T:
        engine = create_engine(database_url)
        try:
            if migrate:
                await upgrade_if_behind(engine)
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run_in_session(
    database_url: str, work: Callable[[AsyncSession], Awaitable[T]], *, migrate: bool = True, create: bool = False
) -> T:
    """For CLI commands: `work(session)` in one committed unit of work (see `run_offline`)."""

    async def in_scope(sessions: async_sessionmaker[AsyncSession]) -> T:
        async with session_scope(sessions) as session:
            return await work(session)

    return run_offline(database_url, in_scope, migrate=migrate, create=create)
