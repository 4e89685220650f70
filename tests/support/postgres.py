"""A fresh PostgreSQL database per test, on the machine's server (or HOLDGATE_TEST_POSTGRES_URL).

Tests that need PostgreSQL take the `postgres_url` fixture; when no server is reachable they are
skipped with the reason in the report (CI starts the local server, so there they run).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import make_url

from service.approvals.pg_listen import asyncpg_dsn

ADMIN_URL = os.environ.get("HOLDGATE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


async def unreachable_reason() -> str | None:
    """None when the server answers; otherwise why the PostgreSQL tests are skipped."""
    try:
        connection = await asyncpg.connect(asyncpg_dsn(ADMIN_URL), timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"PostgreSQL not reachable at {make_url(ADMIN_URL).render_as_string()}: {exc}"
    await connection.close()
    return None


@asynccontextmanager
async def fresh_database(driver: str = "postgresql+asyncpg") -> AsyncIterator[str]:
    """Create an empty database, yield its SQLAlchemy URL, drop it after (even with connections left)."""
    name = f"holdgate_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(ADMIN_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(ADMIN_URL).set(drivername=driver, database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
