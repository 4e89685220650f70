"""The registry of pinned definitions on a real database (SQLite and PostgreSQL): first sight, changes, replicas
learning of an accept, two replicas seeing a server first at once, odd definitions, a database that fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import db
from service.models import AuditEvent, ToolDefinition
from service.tooldefs import NothingToAccept, StaleDefinition, ToolDefinitions, UnknownTool, accept, get

KEY = b"k" * 32


def tool(name: str, description: str = "does things", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}, **extra}


@pytest.fixture
async def sessions(tmp_path, database) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = database.get("database_url") or f"sqlite+aiosqlite:///{tmp_path / 'holdgate.db'}"
    engine = db.create_engine(url)
    await db.upgrade(engine)
    try:
        yield db.session_factory(engine)
    finally:
        await engine.dispose()


async def count(sessions, model, *where) -> int:
    async with sessions() as session:
        return await session.scalar(select(func.count()).select_from(model).where(*where)) or 0


async def test_first_complete_listing_is_trusted_and_later_changes_are_held(sessions):
    registry = ToolDefinitions(sessions)
    await registry.refresh()
    await registry.observe("jobs", [tool("a"), tool("b")], complete=True)
    assert registry.change_of("jobs", "a") is None and registry.change_of("jobs", "b") is None

    await registry.observe("jobs", [tool("a", "does other things"), tool("b"), tool("c")], complete=True)
    changed, new = registry.change_of("jobs", "a"), registry.change_of("jobs", "c")
    assert changed is not None and changed.kind == "changed" and '+  "description": "does other things"' in changed.diff
    assert new is not None and new.kind == "new" and new.accepted_sha256 is None
    assert registry.change_of("jobs", "b") is None
    assert registry.change_of("jobs", "never-listed") is None, "a tool never listed has nothing to compare with"

    # Back to the accepted definition: as accepted again.
    await registry.observe("jobs", [tool("a"), tool("b"), tool("c")], complete=True)
    assert registry.change_of("jobs", "a") is None
    assert registry.change_of("jobs", "c") is not None


async def test_a_partial_listing_of_a_server_never_seen_records_nothing(sessions):
    registry = ToolDefinitions(sessions)
    await registry.observe("jobs", [tool("a")], complete=False)
    assert await count(sessions, ToolDefinition) == 0
    await registry.observe("jobs", [tool("a"), tool("b")], complete=True)
    assert registry.change_of("jobs", "b") is None, "the first complete listing is the first sight"
    await registry.observe("jobs", [tool("z")], complete=False)  # a later page of a known server counts
    assert registry.change_of("jobs", "z") is not None


async def test_an_unchanged_listing_writes_nothing(sessions):
    registry = ToolDefinitions(sessions)
    await registry.observe("jobs", [tool("a")], complete=True)
    async with sessions() as session:
        before = (await get(session, "jobs", "a")).changed_at
    await registry.observe("jobs", [tool("a", inputSchema={"type": "object"})], complete=True)
    async with sessions() as session:
        assert (await get(session, "jobs", "a")).changed_at == before


async def test_another_replica_learns_of_a_change_and_of_an_accept_on_its_next_read(sessions):
    one, two = ToolDefinitions(sessions), ToolDefinitions(sessions)
    await one.observe("jobs", [tool("a")], complete=True)
    await two.refresh()
    await one.observe("jobs", [tool("a", "now deletes")], complete=True)
    assert two.change_of("jobs", "a") is None  # not read yet
    await two.refresh()
    note = two.change_of("jobs", "a")
    assert note is not None and note.kind == "changed"

    # Accepted elsewhere (the CLI): each replica lets calls through after its next read, not before.
    with pytest.raises(StaleDefinition):
        await accept(sessions, "jobs", "a", by="alice", via="cli", now=2.0, audit_key=KEY, expected_sha256="0" * 64)
    row, before = await accept(
        sessions, "jobs", "a", by="alice", via="cli", now=2.0, audit_key=KEY, expected_sha256=note.current_sha256
    )
    assert before == note.accepted_sha256 and row.accepted_sha256 == note.current_sha256
    assert one.change_of("jobs", "a") is not None and two.change_of("jobs", "a") is not None
    await one.refresh()
    await two.refresh()
    assert one.change_of("jobs", "a") is None and two.change_of("jobs", "a") is None
    with pytest.raises(NothingToAccept):
        await accept(sessions, "jobs", "a", by="bob", via="cli", now=3.0, audit_key=KEY)
    with pytest.raises(UnknownTool):
        await accept(sessions, "jobs", "nope", by="bob", via="cli", now=3.0, audit_key=KEY)
    assert await count(sessions, AuditEvent, AuditEvent.verdict == "definition_accepted") == 1


async def test_two_replicas_seeing_a_server_first_at_once_trust_only_one_listing(sessions):
    one, two = ToolDefinitions(sessions), ToolDefinitions(sessions)
    await asyncio.gather(
        one.observe("jobs", [tool("a"), tool("b")], complete=True),
        two.observe("jobs", [tool("a", "another a"), tool("b")], complete=True),
    )
    await one.refresh()
    await two.refresh()
    async with sessions() as session:
        rows = list(await session.scalars(select(ToolDefinition).order_by(ToolDefinition.tool)))
    assert [row.tool for row in rows] == ["a", "b"]
    assert rows[1].accepted_sha256 == rows[1].current_sha256
    # Whichever listing came first was trusted; if the other came second, its `a` is a change, never accepted.
    a = rows[0]
    assert a.accepted_by == "first sight"
    if a.accepted_sha256 != a.current_sha256:
        assert one.change_of("jobs", "a") is not None and two.change_of("jobs", "a") is not None


@pytest.mark.parametrize(
    "description",
    ["NUL \x00 here", "lone surrogate \udc80", "x" * 300_000, ""],
    ids=["nul", "surrogate", "300k", "empty"],
)
async def test_odd_definitions_are_stored_and_read_back_as_the_same_definition(sessions, description):
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(60):
        deep = {"type": "object", "properties": {"x": deep}}
    listed = [tool("odd", description, inputSchema=deep, annotations={"title": "中文 ☃"})]
    registry = ToolDefinitions(sessions)
    await registry.observe("jobs", listed, complete=True)
    fresh = ToolDefinitions(sessions)
    await fresh.refresh()
    await fresh.observe("jobs", listed, complete=True)
    assert fresh.change_of("jobs", "odd") is None, "the stored definition hashes as the listed one"
    await fresh.observe("jobs", [tool("odd", description + "!", inputSchema=deep)], complete=True)
    note = fresh.change_of("jobs", "odd")
    assert note is not None and len(note.diff) <= 4000


async def test_a_database_that_refuses_the_change_leaves_the_tool_held(sessions):
    registry = ToolDefinitions(sessions)
    await registry.observe("jobs", [tool("a")], complete=True)
    async with db.session_scope(sessions) as session:
        await session.execute(text("DROP TABLE tool_definitions"))
    await registry.observe("jobs", [tool("a", "changed while the table is gone")], complete=True)
    note = registry.change_of("jobs", "a")
    assert note is not None and "not recorded" in note.diff


async def test_a_definition_nested_too_deep_to_spell_is_held_not_fatal(sessions):
    registry = ToolDefinitions(sessions)
    await registry.observe("jobs", [tool("a")], complete=True)
    deep: dict[str, Any] = {}
    for _ in range(5000):
        deep = {"x": deep}
    await registry.observe("jobs", [tool("a"), tool("deep", inputSchema=deep)], complete=True)
    note = registry.change_of("jobs", "deep")
    assert note is not None and "cannot be read" in note.diff
    assert registry.change_of("jobs", "a") is None
    await registry.observe("jobs", [tool("a", "changed"), tool("deep", inputSchema=deep)], complete=True)
    assert registry.change_of("jobs", "deep") is not None, "recording the others does not let it through"
