"""Rate limits: sliding windows kept in the database, all or nothing, race-free across replicas.

The guarantee: a limit `{max, window}` lets at most `max` calls through in any span of `window`
seconds, wherever the span starts (no fixed windows, so no burst of 2 x max around a boundary).

The scheme is exact, not an approximation: each (counter, scope key) keeps the times of its last
`max` calls in a ring of `max` slots (`rate_counter_calls`), and its `rate_counters` row says which
slot holds the oldest of them (`next_slot`). A call is allowed iff that oldest time is at least
`window` seconds ago (or the slot is still empty); it then takes the slot. So every allowed call
has at most `max - 1` allowed calls in the `window` seconds before it, and a key never holds more
than `max` rows. `retry_after` is the time until that oldest call leaves the window.

Two statements per call, each covering all of the call's limits, in one transaction:

  1. a multi-row upsert of the keys' rows that advances each `next_slot` and returns the slot to
     use. On PostgreSQL it takes the rows' locks, held to the end of the transaction, so callers of
     one key (from any process) go one at a time; SQLite runs writers one at a time anyway;
  2. a multi-row conditional upsert of those slots: `... DO UPDATE SET at = :now WHERE at <= :now -
     window`. A key with no row back has its oldest call still inside the window: that limit is full.

A limit with an `amount` (`limits[].amount`, a CEL expression over the call) adds that amount instead
of 1: its key keeps one row per counted call still inside the window (`rate_amounts`: time and amount;
older rows are deleted as calls come), and a call is allowed iff the sum of those amounts plus its own
is at most `max`. Its key's `rate_counters` row is locked by an upsert first, like the others, so
callers of one key still go one at a time on any replica. `charges` evaluates each limit's amount for a
call beforehand (pure): an amount that errors, is not a number, is negative, NaN or infinite denies the
call (fail closed). An amount of 0 counts nothing.

If any limit is full the transaction is rolled back, so no key moves (all or nothing). Limits are
applied in (counter, scope key) order, those that count calls before those that add amounts (a counter
is one or the other in a policy), so that concurrent transactions lock rows in the same order
and cannot deadlock. A key whose `max` changed (a policy reload) has its ring rebuilt from the
newest calls it holds, so the new `max` holds at once. `now` is passed in (unix seconds), so tests
own the clock.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, delete, func, insert, select, tuple_, update
from sqlalchemy import inspect as inspect_model
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from service.models import RateAmount, RateCounter, RateCounterCall
from service.policy.conditions import ConditionFailed, call_variables
from service.policy.verdict import Limit

GLOBAL_SCOPE_KEY = "*"


def _table_of(model: type) -> Table:
    """The model's Core table (SQLModel declares no `__table__` for type checkers)."""
    table: object = inspect_model(model).local_table
    assert isinstance(table, Table)
    return table


_KEYS = _table_of(RateCounter)
_CALLS = _table_of(RateCounterCall)
_AMOUNTS = _table_of(RateAmount)
SUM_TOLERANCE = 1e-9
"""Slack for float sums (0.1 + 0.2 is not 0.3): a total over `max` by less than this part of `max` still fits."""
_UPSERTS: dict[str, Callable[[Table], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


@dataclass(frozen=True, slots=True)
class LimitOutcome:
    """`allowed`, or which counter refused and how long until it has room (None: never, max is 0)."""

    allowed: bool
    counter: str | None = None
    retry_after: float | None = None


ALLOWED = LimitOutcome(allowed=True)


def scope_key(limit: Limit, grant: str) -> str:
    return grant if limit.scope == "grant" else GLOBAL_SCOPE_KEY


def charges(
    limits: Sequence[Limit], arguments: Any, *, grant: str, server: str, tool: str, now: float
) -> tuple[float, ...] | ConditionFailed:
    """What one call adds to each of `limits`: 1, or the limit's `amount` for this call.

    `ConditionFailed` (deny the call) when an amount cannot be known: it errors (a missing key, a wrong type),
    is not a number, is negative, NaN or infinite, or the arguments cannot be given to CEL."""
    if all(limit.amount is None for limit in limits):
        return (1.0,) * len(limits)
    variables = call_variables(arguments, tool=tool, server=server, grant=grant, now=now)
    if isinstance(variables, ConditionFailed):
        return ConditionFailed(f"{variables.reason}, so the call is denied")
    found: list[float] = []
    for limit in limits:
        if limit.amount is None:
            found.append(1.0)
            continue
        value = limit.amount.evaluate(variables)
        if isinstance(value, ConditionFailed):
            return ConditionFailed(f"limit {limit.counter!r}: {value.reason}, so the call is denied")
        found.append(value)
    return tuple(found)


async def consume(
    factory: async_sessionmaker[AsyncSession],
    limits: Sequence[Limit],
    *,
    grant: str,
    now: float,
    amounts: Sequence[float] | None = None,
) -> LimitOutcome:
    """Count one call against every limit, or against none if any is full.

    `amounts` (from `charges`, one per limit) is what the call adds to each limit with an `amount`; a limit
    that counts calls always adds 1."""
    if not limits:
        return ALLOWED
    added = list(amounts) if amounts is not None else [1.0] * len(limits)
    if len(added) != len(limits):
        raise ValueError("one amount per limit")
    for limit, amount in zip(limits, added, strict=True):
        if limit.max <= 0 or (limit.amount is not None and amount > limit.max * (1 + SUM_TOLERANCE)):
            # static config, or more than the limit ever holds: refuse without touching the database
            return LimitOutcome(allowed=False, counter=limit.counter, retry_after=None)
    counted = sorted(
        ((limit, scope_key(limit, grant)) for limit in limits if limit.amount is None),
        key=lambda pair: (pair[0].counter, pair[1]),
    )
    summed = sorted(
        (
            (limit, scope_key(limit, grant), amount)
            for limit, amount in zip(limits, added, strict=True)
            if limit.amount is not None
        ),
        key=lambda item: (item[0].counter, item[1]),
    )
    try:
        async with factory() as session, session.begin():
            if counted:
                await _take_slots(session, counted, now)
            if summed:
                await _add_amounts(session, summed, now)
    except _Full as full:  # leaving the block rolled every slot taken back
        return LimitOutcome(
            allowed=False,
            counter=full.limit.counter,
            retry_after=_round_up(full.oldest + full.limit.window_seconds - now),
        )
    return ALLOWED


async def prune(factory: async_sessionmaker[AsyncSession], now: float) -> int:
    """Delete the keys (and their calls) whose newest call left its window; returns how many keys went.

    Only calls outside every window go, so pruning never changes an answer. Keys first, then their
    calls: the same lock order as `consume`, so the two never deadlock.
    """
    async with factory() as session, session.begin():
        gone = list(
            await session.execute(
                delete(RateCounter)
                .where(col(RateCounter.last_at) + col(RateCounter.window_seconds) <= now)
                .returning(col(RateCounter.counter), col(RateCounter.scope_key))
            )
        )
        if gone:
            keys = [tuple(row) for row in gone]
            await session.execute(
                delete(RateCounterCall).where(tuple_(RateCounterCall.counter, RateCounterCall.scope_key).in_(keys))
            )
            await session.execute(delete(_AMOUNTS).where(tuple_(_AMOUNTS.c.counter, _AMOUNTS.c.scope_key).in_(keys)))
    return len(gone)


class MemoryWindows:
    """The same sliding windows, kept in this process's memory: for what must not touch the database.

    A replay of the audit (`service.audit.replay`, calls in time order with their recorded times as `now`) and
    a shadow policy's limits (counted beside the live ones, never enforced) use it. It answers exactly as
    `consume` does (tests/policy/test_limits_memory.py runs both on the same calls): at most `max` calls in
    any span of `window`, all or nothing, the first full limit in (counter, scope key) order refuses, and
    a changed `max` keeps the newest calls. Keys idle past their window go with `prune`.
    """

    def __init__(self) -> None:
        self._rings: dict[tuple[str, str], deque[float]] = {}
        self._windows: dict[tuple[str, str], int] = {}

    def consume(self, limits: Sequence[Limit], *, grant: str, now: float) -> LimitOutcome:
        """Count one call against every limit, or against none if any is full.

        Limits that add up an `amount` are not counted here yet (their sums live in the database's
        `rate_amounts`): a replay or a shadow policy leaves them out, as docs/decisions.md says."""
        limits = [limit for limit in limits if limit.amount is None]
        if not limits:
            return ALLOWED
        for limit in limits:
            if limit.max <= 0:
                return LimitOutcome(allowed=False, counter=limit.counter, retry_after=None)
        keyed = sorted(
            ((limit, scope_key(limit, grant)) for limit in limits), key=lambda pair: (pair[0].counter, pair[1])
        )
        rings = []
        for limit, key in keyed:
            ring = self._ring((limit.counter, key), int(limit.max))
            if len(ring) >= limit.max and ring[0] > now - limit.window_seconds:
                return LimitOutcome(
                    allowed=False,
                    counter=limit.counter,
                    retry_after=_round_up(ring[0] + limit.window_seconds - now),
                )
            rings.append((ring, limit, key))
        for ring, limit, key in rings:
            ring.append(now)
            self._windows[(limit.counter, key)] = limit.window_seconds
        return ALLOWED

    def keys(self) -> Iterator[tuple[str, str]]:
        """The (counter, scope key) pairs counted so far."""
        return iter(self._rings)

    def prune(self, now: float) -> int:
        """Forget the keys whose newest call left its window (answers never change); returns how many went."""
        gone = [key for key, ring in self._rings.items() if not ring or ring[-1] + self._windows.get(key, 0) <= now]
        for key in gone:
            del self._rings[key]
            self._windows.pop(key, None)
        return len(gone)

    def __len__(self) -> int:
        return len(self._rings)

    def _ring(self, key: tuple[str, str], size: int) -> deque[float]:
        ring = self._rings.get(key)
        if ring is None or ring.maxlen != size:
            ring = deque(ring or (), maxlen=size)  # a changed max keeps the newest calls
            self._rings[key] = ring
        return ring


class _Full(Exception):
    """Internal: a limit had no room; raised to roll the transaction back."""

    def __init__(self, limit: Limit, oldest: float) -> None:
        super().__init__(limit.counter)
        self.limit = limit
        self.oldest = oldest


async def _take_slots(session: AsyncSession, keyed: Sequence[tuple[Limit, str]], now: float) -> None:
    """Statements 1 and 2 of the module docstring, each one statement for all the call's limits (rows
    in (counter, scope key) order, which is the order PostgreSQL locks them in); raises _Full.

    Both are fixed statements executed with one parameter set per limit, which SQLAlchemy sends as
    one multi-row INSERT ("insertmanyvalues") and compiles once: a statement built with the rows in
    it would be compiled again for every call."""
    statements = _statements(session)
    advanced = await session.execute(
        statements.advance,
        [
            {
                "counter": limit.counter,
                "scope_key": key,
                "window_seconds": limit.window_seconds,
                "size": limit.max,
                "next_slot": 1 % limit.max,
                "last_at": now,
            }
            for limit, key in keyed
        ],
    )
    next_slots = {(row.counter, row.scope_key): (row.next_slot, row.size) for row in advanced}
    slots: list[int] = []
    for limit, key in keyed:
        next_slot, size = next_slots[(limit.counter, key)]
        slots.append((next_slot - 1) % limit.max if size == limit.max else await _resize(session, limit, key))
    taken = await session.execute(
        statements.take,
        [
            {
                "counter": limit.counter,
                "scope_key": key,
                "slot": slot,
                "at": now,
                "window_seconds": limit.window_seconds,
            }
            for (limit, key), slot in zip(keyed, slots, strict=True)
        ],
    )
    got = {(row.counter, row.scope_key) for row in taken}
    for (limit, key), slot in zip(keyed, slots, strict=True):
        if (limit.counter, key) not in got:
            oldest = await session.scalar(
                select(_CALLS.c.at).where(
                    _CALLS.c.counter == limit.counter, _CALLS.c.scope_key == key, _CALLS.c.slot == slot
                )
            )
            raise _Full(limit, float(oldest if oldest is not None else now))


async def _add_amounts(session: AsyncSession, summed: Sequence[tuple[Limit, str, float]], now: float) -> None:
    """The limits that add up an amount: lock their keys, drop the calls that left each window, and add this
    call's amounts if every sum stays within its `max`; raises _Full (the oldest call whose leaving makes room)."""
    statements = _statements(session)
    await session.execute(
        statements.lock,
        [
            {
                "counter": limit.counter,
                "scope_key": key,
                "window_seconds": limit.window_seconds,
                "size": 0,
                "next_slot": 0,
                "last_at": now,
            }
            for limit, key, _ in summed
        ],
    )
    await session.execute(
        statements.forget,
        [{"c": limit.counter, "k": key, "cutoff": now - limit.window_seconds} for limit, key, _ in summed],
    )
    totals = {
        (row.counter, row.scope_key): float(row.total)
        for row in await session.execute(
            select(_AMOUNTS.c.counter, _AMOUNTS.c.scope_key, func.sum(_AMOUNTS.c.amount).label("total"))
            .where(
                tuple_(_AMOUNTS.c.counter, _AMOUNTS.c.scope_key).in_([(limit.counter, key) for limit, key, _ in summed])
            )
            .group_by(_AMOUNTS.c.counter, _AMOUNTS.c.scope_key)
        )
    }
    for limit, key, amount in summed:
        over = totals.get((limit.counter, key), 0.0) + amount - limit.max
        if amount > 0 and over > limit.max * SUM_TOLERANCE:
            raise _Full(limit, await _room_at(session, limit, key, over, now))
    added = [
        {"counter": limit.counter, "scope_key": key, "at": now, "amount": amount}
        for limit, key, amount in summed
        if amount > 0
    ]
    if added:
        await session.execute(insert(_AMOUNTS), added)


async def _room_at(session: AsyncSession, limit: Limit, key: str, over: float, now: float) -> float:
    """The time of the oldest call whose leaving the window frees `over` (for `retry_after`)."""
    freed = 0.0
    rows = await session.execute(
        select(_AMOUNTS.c.at, _AMOUNTS.c.amount)
        .where(_AMOUNTS.c.counter == limit.counter, _AMOUNTS.c.scope_key == key)
        .order_by(_AMOUNTS.c.at)
    )
    for at, amount in rows:
        freed += float(cast(float, amount))
        if freed >= over - limit.max * SUM_TOLERANCE:
            return float(cast(float, at))
    return now  # nothing to wait for (cannot happen: `consume` refuses an amount over `max` beforehand)


@dataclass(frozen=True, slots=True)
class _Statements:
    """The statements of a call, built once per dialect."""

    advance: Any
    take: Any
    lock: Any
    forget: Any


@functools.cache
def _statements_for(dialect: str) -> _Statements:
    upsert = _UPSERTS[dialect]
    # 1. create each key's row (slot 0 taken), or advance its `next_slot` past the slot this call
    # takes; a key whose `size` is not the limit's `max` does not advance (the caller `_resize`s it)
    keys = upsert(_KEYS)
    new = keys.excluded
    advance = keys.on_conflict_do_update(
        index_elements=[_KEYS.c.counter, _KEYS.c.scope_key],
        set_={
            "next_slot": case((_KEYS.c.size == new.size, (_KEYS.c.next_slot + 1) % new.size), else_=_KEYS.c.next_slot),
            "window_seconds": new.window_seconds,
            "last_at": case((_KEYS.c.last_at < new.last_at, new.last_at), else_=_KEYS.c.last_at),
        },
    ).returning(_KEYS.c.counter, _KEYS.c.scope_key, _KEYS.c.next_slot, _KEYS.c.size)
    # 2. take the slot if the call in it has left the window (`now - window`, as this limit has it now)
    calls = upsert(_CALLS)
    new = calls.excluded
    take = calls.on_conflict_do_update(
        index_elements=[_CALLS.c.counter, _CALLS.c.scope_key, _CALLS.c.slot],
        set_={"at": new.at, "window_seconds": new.window_seconds},
        where=_CALLS.c.at <= new.at - new.window_seconds,
    ).returning(_CALLS.c.counter, _CALLS.c.scope_key)
    # limits that add up an amount: create or touch each key's row, which locks it (PostgreSQL) to the end of the
    # transaction; then forget the amounts that left the window
    keys = upsert(_KEYS)
    new = keys.excluded
    lock = keys.on_conflict_do_update(
        index_elements=[_KEYS.c.counter, _KEYS.c.scope_key],
        set_={
            "window_seconds": new.window_seconds,
            "last_at": case((_KEYS.c.last_at < new.last_at, new.last_at), else_=_KEYS.c.last_at),
        },
    )
    forget = delete(_AMOUNTS).where(
        _AMOUNTS.c.counter == bindparam("c"),
        _AMOUNTS.c.scope_key == bindparam("k"),
        _AMOUNTS.c.at <= bindparam("cutoff"),
    )
    return _Statements(advance, take, lock, forget)


def _statements(session: AsyncSession) -> _Statements:
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise RuntimeError(f"rate limits need SQLite or PostgreSQL, not {dialect}")
    return _statements_for(dialect)


async def _resize(session: AsyncSession, limit: Limit, key: str) -> int:
    """The limit's `max` changed: keep the newest `max` calls, oldest in slot 0; returns the slot to take.

    Runs under the key's row lock (taken by `_advance`). With `max` calls kept the slot to take is
    0, the oldest of them; with fewer, the first empty slot."""
    of_key = and_(_CALLS.c.counter == limit.counter, _CALLS.c.scope_key == key)
    stored: list[float] = list((await session.scalars(select(_CALLS.c.at).where(of_key))).all())
    size = int(limit.max)  # a limit that counts calls has a whole max (`LimitIn`)
    times = sorted(stored, reverse=True)[:size]
    times.reverse()
    await session.execute(delete(_CALLS).where(of_key))
    if times:
        await session.execute(
            insert(_CALLS),
            [
                {
                    "counter": limit.counter,
                    "scope_key": key,
                    "slot": i,
                    "at": at,
                    "window_seconds": limit.window_seconds,
                }
                for i, at in enumerate(times)
            ],
        )
    slot = len(times) % size
    await session.execute(
        update(_KEYS)
        .where(_KEYS.c.counter == limit.counter, _KEYS.c.scope_key == key)
        .values(size=size, next_slot=(slot + 1) % size)
    )
    return slot


def _round_up(seconds: float) -> float:
    """Up to the next millisecond, and never below one (a refused caller should wait)."""
    return max(math.ceil(round(seconds * 1000, 6)) / 1000, 0.001)
