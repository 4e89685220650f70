"""Rate limits against real databases: SQLite (file) and PostgreSQL (both async drivers).

The PostgreSQL tests run in a schema of their own (created and migrated with Alembic once per
module, emptied before each test, dropped at the end), so other tests sharing the `test` database
never see these counters, nor these tests theirs. The clock is injected:
`now` is passed to `consume`, so windows roll over without sleeping.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import db
from service.models import RateCounter
from service.policy import Limit, LimitOutcome, consume, prune
from service.policy.limits import GLOBAL_SCOPE_KEY

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_URLS = {
    "postgresql+asyncpg": f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test",
    "postgresql+psycopg": f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test",
}
T0 = 1_800_057_600.0  # a multiple of 60, 3600 and 86400: the start of a minute, an hour and a day


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Database:
    """One migrated database; `engine()` opens another engine on it (another process, a restart)."""

    url: str
    schema: str | None
    engines: list[AsyncEngine]
    sessions: async_sessionmaker[AsyncSession]

    def engine(self) -> async_sessionmaker[AsyncSession]:
        engine = db.create_engine(self.url)
        if self.schema is not None:
            _use_schema(engine, self.schema)
        self.engines.append(engine)
        return db.session_factory(engine)

    async def counts(self) -> dict[tuple[str, str, int], int]:
        async with self.sessions() as session:
            rows = (await session.execute(select(RateCounter))).scalars().all()
        return {(r.counter, r.scope_key, r.window_start): r.count for r in rows}


def _use_schema(engine: AsyncEngine, schema: str) -> None:
    """Every connection of `engine` works in `schema` (SQLAlchemy's documented search_path recipe)."""

    @event.listens_for(engine.sync_engine, "connect", insert=True)
    def _search_path(dbapi_connection, _record) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        cursor.execute(f'SET SESSION search_path TO "{schema}"')
        cursor.close()
        dbapi_connection.autocommit = autocommit


@dataclass(frozen=True)
class Migrated:
    """A schema migrated once per module: a SQLite template file, or a PostgreSQL schema of our own."""

    backend: str
    url: str
    schema: str | None = None


async def _migrate(url: str, schema: str | None) -> None:
    engine = db.create_engine(url)
    if schema is not None:
        _use_schema(engine, schema)  # before the first connection: never run in another schema
    try:
        if schema is not None:
            async with engine.begin() as conn:
                await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await db.upgrade(engine)
    finally:
        await engine.dispose()


async def _drop_schema(url: str, schema: str) -> None:
    engine = db.create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", *PG_URLS])
def migrated(request, tmp_path_factory) -> Iterator[Migrated]:
    """Alembic runs once per backend; each test then gets empty counters (see `database`)."""
    backend = request.param
    if backend == "sqlite":
        template = tmp_path_factory.mktemp("limits") / "template.db"
        url = f"sqlite+aiosqlite:///{template}"
        asyncio.run(_migrate(url, None))
        yield Migrated(backend, url)
        return
    if not _postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} (trust auth, database 'test')")
    url = PG_URLS[backend]
    schema = f"holdgate_limits_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_migrate(url, schema))
        yield Migrated(backend, url, schema)
    finally:
        asyncio.run(_drop_schema(url, schema))


@pytest.fixture
async def database(migrated: Migrated, tmp_path: Path) -> AsyncIterator[Database]:
    if migrated.schema is None:
        path = tmp_path / "holdgate.db"
        shutil.copyfile(migrated.url.removeprefix("sqlite+aiosqlite:///"), path)
        database = Database(f"sqlite+aiosqlite:///{path}", None, [], None)  # type: ignore[arg-type]
    else:
        database = Database(migrated.url, migrated.schema, [], None)  # type: ignore[arg-type]
    database.sessions = database.engine()
    try:
        async with database.sessions() as session, session.begin():
            await session.execute(delete(RateCounter))
        yield database
    finally:
        for engine in database.engines:
            await engine.dispose()


async def test_database_is_private_to_the_module(database, tmp_path):
    if database.schema is None:
        assert str(tmp_path) in database.url  # SQLite: a copy of the migrated file, per test
        return
    async with database.sessions() as session:
        assert (await session.execute(text("select current_schema()"))).scalar_one() == database.schema


async def test_counts_up_to_max_then_refuses(database):
    limit = Limit("cancel-async-job_rate", 60, 3, "grant")
    outcomes = [await consume(database.sessions, [limit], grant="agent", now=T0 + 10) for _ in range(4)]
    assert [o.allowed for o in outcomes] == [True, True, True, False]
    assert outcomes[3] == LimitOutcome(allowed=False, counter="cancel-async-job_rate", retry_after=50.0)
    assert await database.counts() == {("cancel-async-job_rate", "agent", int(T0)): 3}

    # a refused call consumes nothing: the count stays at max however often it is refused
    for _ in range(3):
        assert not (await consume(database.sessions, [limit], grant="agent", now=T0 + 11)).allowed
    assert await database.counts() == {("cancel-async-job_rate", "agent", int(T0)): 3}


async def test_no_limits_is_allowed_without_touching_the_database(database):
    assert (await consume(database.sessions, [], grant="agent", now=T0)).allowed
    assert await database.counts() == {}


async def test_max_zero_always_refuses(database):
    outcome = await consume(database.sessions, [Limit("never", 60, 0)], grant="agent", now=T0)
    assert outcome == LimitOutcome(allowed=False, counter="never", retry_after=None)
    assert await database.counts() == {}


async def test_several_limits_are_all_or_nothing(database):
    # "a-burst" sorts first, so it is incremented before "z-hourly" refuses: the refusal must roll it back
    burst = Limit("a-burst", 60, 5, "grant")
    hourly = Limit("z-hourly", 3600, 2, "global")
    daily = Limit("m-daily", 86400, 100, "grant")
    limits = [burst, hourly, daily]
    assert (await consume(database.sessions, limits, grant="agent", now=T0 + 1)).allowed
    assert (await consume(database.sessions, limits, grant="agent", now=T0 + 2)).allowed
    refused = await consume(database.sessions, limits, grant="agent", now=T0 + 3)
    assert refused == LimitOutcome(allowed=False, counter="z-hourly", retry_after=3597.0)
    expected = {
        ("a-burst", "agent", int(T0)): 2,
        ("m-daily", "agent", int(T0)): 2,
        ("z-hourly", GLOBAL_SCOPE_KEY, int(T0)): 2,
    }
    assert await database.counts() == expected

    # the limits that had room are still usable on their own
    assert (await consume(database.sessions, [burst, daily], grant="agent", now=T0 + 4)).allowed
    counts = await database.counts()
    assert counts[("a-burst", "agent", int(T0))] == 3 and counts[("m-daily", "agent", int(T0))] == 3


async def test_first_limit_full_consumes_none_of_the_others(database):
    small = Limit("a-small", 60, 1)
    big = Limit("b-big", 60, 10)
    assert (await consume(database.sessions, [small], grant="agent", now=T0)).allowed
    refused = await consume(database.sessions, [big, small], grant="agent", now=T0)
    assert (refused.allowed, refused.counter) == (False, "a-small")
    assert await database.counts() == {("a-small", "agent", int(T0)): 1}


async def test_window_rolls_over(database):
    limit = Limit("per-minute", 60, 2)
    late = T0 + 59.5  # half a second before the minute ends
    assert (await consume(database.sessions, [limit], grant="agent", now=late)).allowed
    assert (await consume(database.sessions, [limit], grant="agent", now=late)).allowed
    refused = await consume(database.sessions, [limit], grant="agent", now=late)
    assert refused.retry_after == 0.5

    assert (await consume(database.sessions, [limit], grant="agent", now=T0 + 60)).allowed  # a new window
    assert (await consume(database.sessions, [limit], grant="agent", now=T0 + 119.999)).allowed
    assert not (await consume(database.sessions, [limit], grant="agent", now=T0 + 119.999)).allowed
    assert await database.counts() == {("per-minute", "agent", int(T0)): 2, ("per-minute", "agent", int(T0) + 60): 2}


async def test_windows_are_aligned_to_multiples_of_their_length(database):
    limit = Limit("odd", 7, 1)
    now = 1000.0  # windows of 7 s: [994, 1001)
    assert (await consume(database.sessions, [limit], grant="g", now=now)).allowed
    assert (await consume(database.sessions, [limit], grant="g", now=now + 0.9)).retry_after == 0.1
    assert (await consume(database.sessions, [limit], grant="g", now=1001.0)).allowed
    assert set(await database.counts()) == {("odd", "g", 994), ("odd", "g", 1001)}


@pytest.mark.parametrize(
    ("offset", "retry_after"),
    [(0, 60.0), (10, 50.0), (10.25, 49.75), (59.9994, 0.001), (59.99999, 0.001), (30.0001, 30.0)],
)
async def test_retry_after_is_the_rest_of_the_window_rounded_up_to_a_millisecond(database, offset, retry_after):
    limit = Limit("once", 60, 1)
    assert (await consume(database.sessions, [limit], grant="g", now=T0)).allowed
    outcome = await consume(database.sessions, [limit], grant="g", now=T0 + offset)
    assert outcome == LimitOutcome(allowed=False, counter="once", retry_after=retry_after)


async def test_grant_scope_counts_each_grant_apart(database):
    limit = Limit("per-grant", 3600, 1, "grant")
    assert (await consume(database.sessions, [limit], grant="alice", now=T0)).allowed
    assert (await consume(database.sessions, [limit], grant="bob", now=T0)).allowed
    assert not (await consume(database.sessions, [limit], grant="alice", now=T0)).allowed
    assert not (await consume(database.sessions, [limit], grant="bob", now=T0)).allowed
    assert (await consume(database.sessions, [limit], grant="carol", now=T0)).allowed
    assert await database.counts() == {
        ("per-grant", "alice", int(T0)): 1,
        ("per-grant", "bob", int(T0)): 1,
        ("per-grant", "carol", int(T0)): 1,
    }


async def test_global_scope_is_shared_by_all_grants(database):
    limit = Limit("shared", 3600, 2, "global")
    assert (await consume(database.sessions, [limit], grant="alice", now=T0)).allowed
    assert (await consume(database.sessions, [limit], grant="bob", now=T0)).allowed
    refused = await consume(database.sessions, [limit], grant="carol", now=T0)
    assert (refused.allowed, refused.counter) == (False, "shared")
    assert await database.counts() == {("shared", GLOBAL_SCOPE_KEY, int(T0)): 2}


async def test_grant_and_global_limits_together(database):
    mine = Limit("mine", 60, 5, "grant")
    everyone = Limit("everyone", 60, 3, "global")
    for grant in ("a", "b", "a"):
        assert (await consume(database.sessions, [mine, everyone], grant=grant, now=T0)).allowed
    refused = await consume(database.sessions, [mine, everyone], grant="b", now=T0)
    assert refused.counter == "everyone"
    counts = await database.counts()
    assert counts[("mine", "a", int(T0))] == 2 and counts[("mine", "b", int(T0))] == 1


async def test_counters_survive_a_new_engine(database):
    limit = Limit("durable", 3600, 2)
    assert (await consume(database.sessions, [limit], grant="g", now=T0)).allowed
    assert (await consume(database.sessions, [limit], grant="g", now=T0 + 1)).allowed
    for engine in database.engines:
        await engine.dispose()
    restarted = database.engine()
    assert not (await consume(restarted, [limit], grant="g", now=T0 + 2)).allowed


async def test_concurrent_calls_never_exceed_max(database):
    """Many calls at once, from two engines (two processes/replicas): exactly `max` get through."""
    per_grant = Limit("c-grant", 60, 7, "grant")
    shared = Limit("c-shared", 60, 12, "global")
    other = database.engine()
    factories = [database.sessions, other]
    grants = ["alice", "bob"]
    calls = [consume(factories[i % 2], [per_grant, shared], grant=grants[(i // 2) % 2], now=T0 + 5) for i in range(48)]
    outcomes = await asyncio.gather(*calls)

    allowed = [o for o in outcomes if o.allowed]
    assert len(allowed) == 12, [o.counter for o in outcomes]
    counts = await database.counts()
    assert counts[("c-shared", GLOBAL_SCOPE_KEY, int(T0))] == 12
    assert counts[("c-grant", "alice", int(T0))] <= 7 and counts[("c-grant", "bob", int(T0))] <= 7
    assert counts[("c-grant", "alice", int(T0))] + counts[("c-grant", "bob", int(T0))] == 12
    assert all(o.retry_after == 55.0 for o in outcomes if not o.allowed)


async def test_concurrent_all_or_nothing(database):
    """Under contention a refused call still moves no counter: the counts match the allowed calls."""
    tight = Limit("z-tight", 60, 5, "global")
    loose = Limit("a-loose", 60, 1000, "global")
    outcomes = await asyncio.gather(
        *(consume(database.sessions, [loose, tight], grant=f"g{i}", now=T0) for i in range(30))
    )
    allowed = sum(o.allowed for o in outcomes)
    assert allowed == 5
    assert await database.counts() == {("a-loose", "*", int(T0)): 5, ("z-tight", "*", int(T0)): 5}


async def test_prune_deletes_windows_older_than_a_day(database):
    limit = Limit("old", 60, 5)
    await consume(database.sessions, [limit], grant="g", now=T0)
    await consume(database.sessions, [limit], grant="g", now=T0 + 86400)
    assert await prune(database.sessions, now=T0 + 86400 + 59) == 0  # ended less than a day ago
    assert await prune(database.sessions, now=T0 + 86400 + 61) == 1
    assert list(await database.counts()) == [("old", "g", int(T0) + 86400)]
