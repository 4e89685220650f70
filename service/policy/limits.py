"""Rate limits: consume fixed-window counters in the database, all or nothing, race-free.

A window of `w` seconds starts at `floor(now / w) * w`. Each limit is one atomic conditional
upsert on `rate_counters`:

    INSERT ... VALUES (counter, scope_key, window_start, w, 1)
    ON CONFLICT (counter, scope_key, window_start)
    DO UPDATE SET count = rate_counters.count + 1 WHERE rate_counters.count < :max
    RETURNING count

so the check and the increment are one statement (no read-modify-write; PostgreSQL locks the row
and re-checks the WHERE on its latest version, SQLite runs writers one at a time). All limits of a
call run in one transaction: if any returns no row, the transaction is rolled back and no counter
moves. Limits are applied in (counter, scope) order so that concurrent transactions lock rows in
the same order and cannot deadlock. `now` is passed in (unix seconds) so tests own the clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.models import RateCounter
from service.policy.verdict import Limit

GLOBAL_SCOPE_KEY = "*"
PRUNE_AFTER_SECONDS = 86400


@dataclass(frozen=True, slots=True)
class LimitOutcome:
    """`allowed`, or which counter refused and when its window ends (None: never, max is 0)."""

    allowed: bool
    counter: str | None = None
    retry_after: float | None = None


ALLOWED = LimitOutcome(allowed=True)


def window_start(now: float, window_seconds: int) -> int:
    return math.floor(now / window_seconds) * window_seconds


def scope_key(limit: Limit, grant: str) -> str:
    return grant if limit.scope == "grant" else GLOBAL_SCOPE_KEY


async def consume(
    factory: async_sessionmaker[AsyncSession], limits: Sequence[Limit], *, grant: str, now: float
) -> LimitOutcome:
    """Count one call against every limit, or against none if any is full."""
    if not limits:
        return ALLOWED
    for limit in limits:
        if limit.max <= 0:  # static config: refuse without touching the database
            return LimitOutcome(allowed=False, counter=limit.counter, retry_after=None)
    ordered = sorted(limits, key=lambda limit: (limit.counter, scope_key(limit, grant)))
    try:
        async with factory() as session, session.begin():
            insert = _insert_for(session)
            for limit in ordered:
                start = window_start(now, limit.window_seconds)
                result = await session.execute(_upsert(insert, limit, scope_key(limit, grant), start))
                if result.first() is None:
                    raise _Full(limit, start)  # leaving the block rolls every increment back
    except _Full as full:
        return LimitOutcome(
            allowed=False,
            counter=full.limit.counter,
            retry_after=_round_up(full.start + full.limit.window_seconds - now),
        )
    return ALLOWED


async def prune(factory: async_sessionmaker[AsyncSession], now: float) -> int:
    """Delete windows that ended more than a day ago; returns how many rows went."""
    cutoff = math.floor(now) - PRUNE_AFTER_SECONDS
    async with factory() as session, session.begin():
        result = await session.execute(
            delete(RateCounter).where(RateCounter.window_start + RateCounter.window_seconds < cutoff)
        )
    return result.rowcount or 0


class _Full(Exception):
    """Internal: a limit had no room; raised to roll the transaction back."""

    def __init__(self, limit: Limit, start: int) -> None:
        super().__init__(limit.counter)
        self.limit = limit
        self.start = start


def _insert_for(session: AsyncSession):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"rate limits need SQLite or PostgreSQL, not {dialect}")


def _upsert(insert, limit: Limit, key: str, start: int):
    table = RateCounter.__table__
    stmt = insert(table).values(
        counter=limit.counter,
        scope_key=key,
        window_start=start,
        window_seconds=limit.window_seconds,
        count=1,
    )
    return stmt.on_conflict_do_update(
        index_elements=[table.c.counter, table.c.scope_key, table.c.window_start],
        set_={"count": table.c.count + 1},
        where=table.c.count < limit.max,
    ).returning(table.c.count)


def _round_up(seconds: float) -> float:
    """Up to the next millisecond, and never below one (a refused caller should wait)."""
    return max(math.ceil(round(seconds * 1000, 6)) / 1000, 0.001)
