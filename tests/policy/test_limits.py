"""Rate limits against real databases: SQLite (file) and PostgreSQL (both async drivers).

A limit is a sliding window: at most `max` calls in any span of `window` seconds. The PostgreSQL
tests run in a schema of their own (created and migrated with Alembic once per
module, emptied before each test, dropped at the end), so other tests sharing the `test` database
never see these counters, nor these tests theirs. The clock is injected:
`now` is passed to `consume`, so time moves without sleeping.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import random
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import delete, event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import db
from service.models import RateCounter, RateCounterCall
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

    async def calls(self) -> dict[tuple[str, str], list[float]]:
        """The call times each (counter, scope key) holds, oldest first."""
        async with self.sessions() as session:
            rows = (await session.execute(select(RateCounterCall))).scalars().all()
        found: dict[tuple[str, str], list[float]] = {}
        for row in rows:
            found.setdefault((row.counter, row.scope_key), []).append(row.at)
        return {key: sorted(times) for key, times in found.items()}

    async def counts(self) -> dict[tuple[str, str], int]:
        return {key: len(times) for key, times in (await self.calls()).items()}


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
            await session.execute(delete(RateCounterCall))
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


def most_in_any_span(times: list[float], window: float) -> int:
    """The largest number of `times` inside one half-open span [t, t + window)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + window) - i for i, t in enumerate(ordered)), default=0)


async def test_counts_up_to_max_then_refuses(database):
    limit = Limit("cancel-async-job_rate", 60, 3, "grant")
    outcomes = [await consume(database.sessions, [limit], grant="agent", now=T0 + 10) for _ in range(4)]
    assert [o.allowed for o in outcomes] == [True, True, True, False]
    assert outcomes[3] == LimitOutcome(allowed=False, counter="cancel-async-job_rate", retry_after=60.0)
    assert await database.counts() == {("cancel-async-job_rate", "agent"): 3}

    # a refused call consumes nothing: the key holds max calls however often it is refused
    for _ in range(3):
        assert not (await consume(database.sessions, [limit], grant="agent", now=T0 + 11)).allowed
    assert await database.calls() == {("cancel-async-job_rate", "agent"): [T0 + 10] * 3}


async def test_no_limits_is_allowed_without_touching_the_database(database):
    assert (await consume(database.sessions, [], grant="agent", now=T0)).allowed
    assert await database.counts() == {}


async def test_max_zero_always_refuses(database):
    outcome = await consume(database.sessions, [Limit("never", 60, 0)], grant="agent", now=T0)
    assert outcome == LimitOutcome(allowed=False, counter="never", retry_after=None)
    assert await database.counts() == {}


async def test_no_burst_of_twice_max_around_a_window_boundary(database):
    """The fixed-window bug: 30 a minute let 30 through just before a minute's end and 30 more just after."""
    limit = Limit("per-minute", 60, 30)
    before = [await consume(database.sessions, [limit], grant="g", now=T0 + 59.5) for _ in range(30)]
    after = [await consume(database.sessions, [limit], grant="g", now=T0 + 60.5) for _ in range(30)]
    assert all(o.allowed for o in before)
    assert not any(o.allowed for o in after)
    assert after[0].retry_after == 59.0  # until the calls at T0 + 59.5 leave the window
    assert (await consume(database.sessions, [limit], grant="g", now=T0 + 119.499)).allowed is False
    assert (await consume(database.sessions, [limit], grant="g", now=T0 + 119.5)).allowed


@pytest.mark.parametrize("seed", [1, 2])
async def test_thirty_a_minute_never_lets_31_through_in_any_60_seconds(database, seed):
    """Bursts at random moments over five minutes, across every minute boundary: in no 60 s span do
    more than 30 calls get through, and no call is refused that the guarantee would have let through."""
    limit = Limit("thirty", 60, 30)
    rng = random.Random(seed)
    moments = sorted(
        T0 + rng.choice([rng.uniform(0, 300), 60 * rng.randint(1, 4) + rng.uniform(-1, 1)]) for _ in range(150)
    )
    allowed: list[float] = []
    for now in moments:
        for _ in range(rng.randint(1, 4)):
            outcome = await consume(database.sessions, [limit], grant="g", now=now)
            in_window = [t for t in allowed if t > now - 60]
            assert outcome.allowed == (len(in_window) < 30), f"at {now - T0:.3f}: {len(in_window)} in the window"
            if outcome.allowed:
                allowed.append(now)
            else:
                assert outcome.retry_after == pytest.approx(min(in_window) + 60 - now, abs=0.001)
    assert most_in_any_span(allowed, 60) == 30
    assert all(n <= 30 for n in (await database.counts()).values()), "a key holds at most max rows"


async def test_retry_after_is_until_the_oldest_call_leaves_the_window(database):
    limit = Limit("three", 60, 3)
    for offset in (0, 10, 20):
        assert (await consume(database.sessions, [limit], grant="g", now=T0 + offset)).allowed
    assert (await consume(database.sessions, [limit], grant="g", now=T0 + 30)).retry_after == 30.0
    assert (await consume(database.sessions, [limit], grant="g", now=T0 + 60)).allowed  # T0 left
    assert (await consume(database.sessions, [limit], grant="g", now=T0 + 61)).retry_after == 9.0  # T0 + 10 leaves
    assert await database.calls() == {("three", "g"): [T0 + 10, T0 + 20, T0 + 60]}


async def test_a_key_keeps_at_most_max_rows(database):
    limit = Limit("ring", 10, 5)
    for i in range(200):
        await consume(database.sessions, [limit], grant="g", now=T0 + i * 0.7)
    assert await database.counts() == {("ring", "g"): 5}


async def test_a_changed_max_holds_at_once(database):
    """A policy reload that changes a counter's max: the calls already in the window count against the new max."""
    for i in range(5):
        assert (await consume(database.sessions, [Limit("c", 60, 5)], grant="g", now=T0 + i)).allowed
    lower = Limit("c", 60, 3)
    refused = await consume(database.sessions, [lower], grant="g", now=T0 + 10)
    assert (refused.allowed, refused.retry_after) == (False, 52.0)  # the 3rd newest (T0 + 2) leaves at T0 + 62
    assert (await consume(database.sessions, [lower], grant="g", now=T0 + 62)).allowed
    assert await database.calls() == {("c", "g"): [T0 + 3, T0 + 4, T0 + 62]}

    higher = Limit("c", 60, 6)
    outcomes = [await consume(database.sessions, [higher], grant="g", now=T0 + 62.5) for _ in range(4)]
    assert [o.allowed for o in outcomes] == [True, True, True, False]
    assert most_in_any_span((await database.calls())[("c", "g")], 60) == 6


async def test_several_limits_are_all_or_nothing(database):
    # "a-burst" sorts first, so it takes a slot before "z-hourly" refuses: the refusal must roll it back
    burst = Limit("a-burst", 60, 5, "grant")
    hourly = Limit("z-hourly", 3600, 2, "global")
    daily = Limit("m-daily", 86400, 100, "grant")
    limits = [burst, hourly, daily]
    assert (await consume(database.sessions, limits, grant="agent", now=T0 + 1)).allowed
    assert (await consume(database.sessions, limits, grant="agent", now=T0 + 2)).allowed
    refused = await consume(database.sessions, limits, grant="agent", now=T0 + 3)
    assert refused == LimitOutcome(allowed=False, counter="z-hourly", retry_after=3598.0)
    expected = {("a-burst", "agent"): 2, ("m-daily", "agent"): 2, ("z-hourly", GLOBAL_SCOPE_KEY): 2}
    assert await database.counts() == expected

    # the limits that had room are still usable on their own
    assert (await consume(database.sessions, [burst, daily], grant="agent", now=T0 + 4)).allowed
    counts = await database.counts()
    assert counts[("a-burst", "agent")] == 3 and counts[("m-daily", "agent")] == 3


async def test_first_limit_full_consumes_none_of_the_others(database):
    small = Limit("a-small", 60, 1)
    big = Limit("b-big", 60, 10)
    assert (await consume(database.sessions, [small], grant="agent", now=T0)).allowed
    refused = await consume(database.sessions, [big, small], grant="agent", now=T0)
    assert (refused.allowed, refused.counter) == (False, "a-small")
    assert await database.counts() == {("a-small", "agent"): 1}


@pytest.mark.parametrize(
    ("offset", "retry_after"),
    [(0, 60.0), (10, 50.0), (10.25, 49.75), (59.9994, 0.001), (59.99999, 0.001), (30.0001, 30.0)],
)
async def test_retry_after_is_rounded_up_to_a_millisecond(database, offset, retry_after):
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
    assert await database.counts() == {("per-grant", "alice"): 1, ("per-grant", "bob"): 1, ("per-grant", "carol"): 1}


async def test_global_scope_is_shared_by_all_grants(database):
    limit = Limit("shared", 3600, 2, "global")
    assert (await consume(database.sessions, [limit], grant="alice", now=T0)).allowed
    assert (await consume(database.sessions, [limit], grant="bob", now=T0)).allowed
    refused = await consume(database.sessions, [limit], grant="carol", now=T0)
    assert (refused.allowed, refused.counter) == (False, "shared")
    assert await database.counts() == {("shared", GLOBAL_SCOPE_KEY): 2}


async def test_grant_and_global_limits_together(database):
    mine = Limit("mine", 60, 5, "grant")
    everyone = Limit("everyone", 60, 3, "global")
    for grant in ("a", "b", "a"):
        assert (await consume(database.sessions, [mine, everyone], grant=grant, now=T0)).allowed
    refused = await consume(database.sessions, [mine, everyone], grant="b", now=T0)
    assert refused.counter == "everyone"
    counts = await database.counts()
    assert counts[("mine", "a")] == 2 and counts[("mine", "b")] == 1


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
    assert counts[("c-shared", GLOBAL_SCOPE_KEY)] == 12
    assert counts[("c-grant", "alice")] <= 7 and counts[("c-grant", "bob")] <= 7
    assert counts[("c-grant", "alice")] + counts[("c-grant", "bob")] == 12
    assert all(o.retry_after == 60.0 for o in outcomes if not o.allowed)


async def test_concurrent_calls_across_the_old_boundary_never_exceed_max(database):
    """Two engines calling together on both sides of a minute boundary: at most max in any 60 s."""
    limit = Limit("edge", 60, 10, "global")
    factories = [database.sessions, database.engine()]
    moments = [T0 + 59.9] * 20 + [T0 + 60.1] * 20 + [T0 + 119.95] * 20
    allowed: list[float] = []
    for moment in sorted(set(moments)):
        batch = [m for m in moments if m == moment]
        outcomes = await asyncio.gather(
            *(consume(factories[i % 2], [limit], grant=f"g{i}", now=m) for i, m in enumerate(batch))
        )
        allowed += [moment for o in outcomes if o.allowed]
    assert allowed == [T0 + 59.9] * 10 + [T0 + 119.95] * 10
    assert most_in_any_span(allowed, 60) == 10


async def test_concurrent_all_or_nothing(database):
    """Under contention a refused call still takes no slot: the keys hold exactly the allowed calls."""
    tight = Limit("z-tight", 60, 5, "global")
    loose = Limit("a-loose", 60, 1000, "global")
    outcomes = await asyncio.gather(
        *(consume(database.sessions, [loose, tight], grant=f"g{i}", now=T0) for i in range(30))
    )
    allowed = sum(o.allowed for o in outcomes)
    assert allowed == 5
    assert await database.counts() == {("a-loose", "*"): 5, ("z-tight", "*"): 5}


async def test_prune_deletes_keys_idle_longer_than_their_window(database):
    minute = Limit("old", 60, 5)
    day = Limit("daily", 86400, 5)
    await consume(database.sessions, [minute, day], grant="g", now=T0)
    await consume(database.sessions, [minute], grant="h", now=T0 + 30)
    assert await prune(database.sessions, now=T0 + 59) == 0  # every key still has a call in its window
    assert await prune(database.sessions, now=T0 + 60) == 1
    assert set(await database.counts()) == {("old", "h"), ("daily", "g")}
    assert await prune(database.sessions, now=T0 + 86400) == 2
    assert await database.counts() == {}
    assert (await consume(database.sessions, [minute], grant="g", now=T0 + 86400)).allowed


_CALLER = """
import asyncio, json, sys
from service import db
from service.policy import Limit, consume

async def main(url, process):
    engine = db.create_engine(url)
    sessions = db.session_factory(engine)
    limit = Limit("two-processes", 60, 25, "global")
    await consume(sessions, [Limit("warm-up", 60, 1, "grant")], grant=f"p{process}", now=0)  # connected
    allowed = []
    for moment in (float(m) for m in sys.argv[3].split(",")):
        print("ready", flush=True)
        sys.stdin.readline()  # the test says go to both processes at once, burst by burst
        calls = [consume(sessions, [limit], grant=f"p{process}", now=moment) for _ in range(20)]
        outcomes = await asyncio.gather(*calls)
        allowed += [moment for o in outcomes if o.allowed]
    await engine.dispose()
    print(json.dumps(allowed), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_two_processes_on_postgresql_never_exceed_max_in_any_window(postgres_url):
    """Two separate processes (as two replicas are) call together on one PostgreSQL database, 20 calls
    each in three bursts on both sides of a minute boundary: at most 25 get through in any 60 s, 25
    in the first burst, none just after the boundary, 25 once the first burst left the window."""
    engine = db.create_engine(postgres_url)
    await db.upgrade(engine)
    await engine.dispose()
    bursts = (T0 + 59.9, T0 + 60.1, T0 + 120)
    root = Path(__file__).resolve().parents[2]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CALLER, postgres_url, str(i), ",".join(str(m) for m in bursts),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        for i in range(2)
    ]  # fmt: skip
    # Each burst starts when both processes are connected and the burst before has ended in both, so the
    # calls at one moment race each other across processes, and the moments come in their real order.
    for _ in bursts:
        for process in processes:
            assert process.stdout and process.stdin
            assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
        for process in processes:
            assert process.stdin
            process.stdin.write(b"go\n")
            await process.stdin.drain()
    allowed: list[float] = []
    for process in processes:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0
        allowed += json.loads(out)
    assert most_in_any_span(allowed, 60) == 25
    assert sorted(allowed) == [T0 + 59.9] * 25 + [T0 + 120] * 25
