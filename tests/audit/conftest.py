"""The audit tests' database: a migrated engine on SQLite or PostgreSQL (the `database` fixture)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from service import db


@pytest.fixture
async def engine(database: dict[str, Any], tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(database.get("database_url", f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"))
    await db.upgrade(engine)
    yield engine
    await engine.dispose()
